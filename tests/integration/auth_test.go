package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/authgen"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// authServer runs a nats-server with the authorization `cairn auth` generates for spec;
// its notices, warnings and errors (permission violations among them) go to log.
type authServer struct {
	t     *testing.T
	srv   *natstest.Server
	spec  authgen.Spec
	users map[string]authgen.User
	log   *natstest.LogBuffer
}

func startAuthServer(t *testing.T, spec authgen.Spec) *authServer {
	t.Helper()
	users, err := authgen.Generate(spec, authgen.NoSeeds)
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	if err := authgen.WriteServerConfig(&conf, spec, users, t.Name()); err != nil {
		t.Fatal(err)
	}
	a := &authServer{t: t, spec: spec.WithDefaults(), users: map[string]authgen.User{}, log: &natstest.LogBuffer{}}
	for _, u := range users {
		a.users[u.Name] = u
	}
	a.srv = natstest.StartConfig(t, conf.String(), a.log)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server log:\n%s", a.log.String())
		}
	})
	return a
}

// user returns the generated user name (op.<job>.<instance>, coord.<name>, …).
func (a *authServer) user(name string) authgen.User {
	a.t.Helper()
	u, ok := a.users[name]
	if !ok {
		a.t.Fatalf("no generated user %s", name)
	}
	return u
}

// connect connects as the generated user name, with its nkey and inbox prefix, and
// hands the connection's asynchronous errors (permission violations) to errs if not nil.
func (a *authServer) connect(name string, errs chan<- error) *nats.Conn {
	a.t.Helper()
	u := a.user(name)
	opts := cairnjs.ConnectOptions{URLs: a.srv.URL, NKeySeed: string(u.Seed), InboxPrefix: u.InboxPrefix, Name: name}
	opts.Extra = append(opts.Extra, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errs != nil {
			select {
			case errs <- err:
			default:
			}
		}
	}))
	nc, err := cairnjs.Connect(opts)
	if err != nil {
		a.t.Fatalf("connect as %s: %v", name, err)
	}
	a.t.Cleanup(nc.Close)
	return nc
}

// violations returns the permission violations the server logged for user name.
func (a *authServer) violations(name string) []string {
	key := "nkey:" + a.user(name).PublicKey
	var out []string
	for l := range strings.Lines(a.log.String()) {
		if strings.Contains(l, key) && strings.Contains(l, "Violation") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// noViolations fails the test when the server logged a permission violation of any user
// but those in except.
func (a *authServer) noViolations(except ...string) {
	a.t.Helper()
	for name := range a.users {
		if slices.Contains(except, name) {
			continue
		}
		if v := a.violations(name); len(v) > 0 {
			a.t.Errorf("user %s met permission violations:\n%s", name, strings.Join(v, "\n"))
		}
	}
}

// waitViolation waits until the server logged a violation of user name whose line holds
// want (e.g. `Publish Violation - Subject "x"`).
func (a *authServer) waitViolation(name, want string) {
	a.t.Helper()
	natstest.Eventually(a.t, 10*time.Second, fmt.Sprintf("the server logged no violation %s of %s", want, name), func() bool {
		for _, v := range a.violations(name) {
			if strings.Contains(v, want) {
				return true
			}
		}
		return false
	})
}

// system starts a system on the server: its admin connection is the first admin's, and
// each service connects as its own user. The coordinators coordinate the jobs of the
// first coordinator in the spec.
func (a *authServer) system(opts cairnjs.Options) *system {
	a.t.Helper()
	nc := a.connect("admin."+a.spec.Admins[0], nil)
	js, err := jetstream.New(nc)
	if err != nil {
		a.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cairnjs.Ensure(ctx, js, opts)
	if err != nil {
		a.t.Fatal(err)
	}
	s := &system{t: a.t, srv: a.srv, nc: nc, js: js, res: res, opts: opts, services: map[string]*running{}}
	s.coordinatorJobs = a.user("coord." + a.spec.Coordinators[0].Name).Jobs
	s.connect = func(name string) *nats.Conn {
		for _, u := range a.users {
			if u.Name == "configsvc."+name || u.Name == "coord."+name || u.Role == "operator" && u.Instance == name {
				return a.connect(u.Name, nil)
			}
		}
		a.t.Fatalf("no generated user for service %s", name)
		return nil
	}
	a.t.Cleanup(s.stopAll)
	return s
}
