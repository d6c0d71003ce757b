package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-stream/cairn/internal/authgen"
)

func TestAuthCommand(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(spec, []byte(`{"jobs":[{"name":"demo","instances":["counter-0"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	if err := auth([]string{"--spec", spec}, &out, &stderr); err != nil {
		t.Fatalf("print: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"accounts {", `"cairn.ack.demo.counter-0"`, "# op.demo.counter-0\nNATS_NKEY_SEED=SU", "NATS_INBOX_PREFIX=_INBOX.op.demo.counter-0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed output lacks %q", want)
		}
	}
	gen := filepath.Join(dir, "gen")
	if err := auth([]string{"--spec", spec, "--out", gen, "--tls-hosts", "nats,127.0.0.1"}, &out, &stderr); err != nil {
		t.Fatalf("--out: %v\n%s", err, stderr.String())
	}
	for _, f := range []string{authgen.AuthFile, authgen.CAFile, filepath.Join(authgen.NKeyDir, "op.demo.counter-0.nk"), filepath.Join(authgen.EnvDir, "admin.admin.env")} {
		if _, err := os.Stat(filepath.Join(gen, f)); err != nil {
			t.Errorf("--out wrote no %s: %v", f, err)
		}
	}
	out.Reset()
	if err := auth([]string{"--table"}, &out, &stderr); err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := authgen.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if out.String() != table.String() {
		t.Error("--table prints something else than authgen.WriteTable")
	}
	for _, args := range [][]string{{}, {"--spec", spec, "--rotate"}, {"--spec", spec, "--tls-hosts", "nats"}} {
		if err := auth(args, &out, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("auth %v = %v, want a usage error", args, err)
		}
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"jobs":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auth([]string{"--spec", bad}, &out, &stderr); err == nil || !strings.Contains(err.Error(), "no jobs") {
		t.Errorf("a spec without jobs: %v", err)
	}
}
