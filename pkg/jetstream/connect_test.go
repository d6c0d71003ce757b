package jetstream_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

func TestConnectRefusesBadCredentials(t *testing.T) {
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountSeed, err := account.Seed()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts cjs.ConnectOptions
		want string
	}{
		{"user and nkey", cjs.ConnectOptions{User: "u", NKeySeed: "SUx"}, cjs.ErrConflictingAuth.Error()},
		{"nkey file and seed", cjs.ConnectOptions{NKeyFile: "f", NKeySeed: "SUx"}, cjs.ErrConflictingAuth.Error()},
		{"creds and nkey file", cjs.ConnectOptions{Creds: "c", NKeyFile: "f"}, cjs.ErrConflictingAuth.Error()},
		{"not a seed", cjs.ConnectOptions{NKeySeed: "not a seed"}, "nkey seed"},
		{"an account's seed", cjs.ConnectOptions{NKeySeed: string(accountSeed)}, "not a user seed"},
		{"missing seed file", cjs.ConnectOptions{NKeyFile: "/nonexistent/seed.nk"}, "nkey seed file"},
		{"inbox prefix with a wildcard", cjs.ConnectOptions{InboxPrefix: "_INBOX.*"}, "invalid custom prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := cjs.Connect(tc.opts)
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(tc.want, "give one of") && !errors.Is(err, cjs.ErrConflictingAuth) {
				t.Fatalf("Connect = %v, want ErrConflictingAuth", err)
			}
		})
	}
}
