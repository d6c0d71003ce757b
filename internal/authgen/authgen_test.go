package authgen_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/cairn-stream/cairn/internal/authgen"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

func twoJobs() authgen.Spec {
	return authgen.Spec{
		Jobs: []authgen.Job{
			{Name: "demo", Instances: []string{"counter-0", "counter-1"}},
			{Name: "orders", Instances: []string{"orders-0"}, Input: &authgen.Stream{Stream: "ORDERS", Subjects: []string{"orders.eu.{instance}", "orders.us.{instance}"}}},
		},
		Coordinators: []authgen.Member{{Name: "c1"}, {Name: "c2", Jobs: []string{"demo"}}},
		Loadgens:     []authgen.Member{{Name: "feed", Jobs: []string{"demo"}}},
	}
}

func TestSpecIsValidated(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"unknown field", `{"jobs":[{"name":"j","instances":["i"]}],"extra":1}`, `unknown field "extra"`},
		{"no jobs", `{"jobs":[]}`, "no jobs"},
		{"bad job name", `{"jobs":[{"name":"a.b","instances":["i"]}]}`, `job name "a.b"`},
		{"job twice", `{"jobs":[{"name":"j","instances":["i"]},{"name":"j","instances":["k"]}]}`, "job j is given twice"},
		{"no instances", `{"jobs":[{"name":"j"}]}`, "job j has no instances"},
		{"bad instance", `{"jobs":[{"name":"j","instances":["*"]}]}`, `instance name "*"`},
		{"instance twice", `{"jobs":[{"name":"j","instances":["i","i"]}]}`, "instance i is given twice"},
		{"bad input stream", `{"jobs":[{"name":"j","instances":["i"],"input":{"stream":"IN.X","subjects":["in.{instance}"]}}]}`, "not a stream name"},
		{"bad subject", `{"jobs":[{"name":"j","instances":["i"],"output":{"stream":"OUT","subjects":["out..{instance}"]}}]}`, "token 2 is empty"},
		{"unknown job of a coordinator", `{"jobs":[{"name":"j","instances":["i"]}],"coordinators":[{"name":"c","jobs":["k"]}]}`, "job k is not among the spec's jobs"},
		{"coordinator twice", `{"jobs":[{"name":"j","instances":["i"]}],"coordinators":[{"name":"c"},{"name":"c"}]}`, "coordinator c is given twice"},
		{"bad prefix", `{"prefix":"a.*","jobs":[{"name":"j","instances":["i"]}]}`, "wildcards are not allowed"},
		{"trailing data", `{"jobs":[{"name":"j","instances":["i"]}]} {}`, "data after the JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authgen.LoadSpec(strings.NewReader(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadSpec = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzLoadSpec(f *testing.F) {
	f.Add(`{"jobs":[{"name":"demo","instances":["counter-0"]}],"coordinators":[{"name":"c","jobs":["demo"]}]}`)
	f.Add(`{"jobs":[{"name":"j","instances":["i"],"input":{"stream":"IN","subjects":["in.{job}.{instance}"]}}]}`)
	f.Fuzz(func(t *testing.T, data string) {
		spec, err := authgen.LoadSpec(strings.NewReader(data))
		if err != nil {
			return
		}
		users, err := authgen.Generate(spec, authgen.NoSeeds)
		if err != nil {
			t.Fatalf("a spec that validates cannot be generated: %v", err)
		}
		var b bytes.Buffer
		if err := authgen.WriteServerConfig(&b, spec, users, "fuzz"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPermissionsAreScoped checks the generated permissions of each kind of user against
// what the rules promise: an operator's writes name its own job and instance, a
// coordinator's its own jobs, and nobody but configsvc publishes config events.
func TestPermissionsAreScoped(t *testing.T) {
	users, err := authgen.Generate(twoJobs(), authgen.NoSeeds)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]authgen.User{}
	for _, u := range users {
		byName[u.Name] = u
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	wantNames := []string{"admin.admin", "configsvc.configsvc", "coord.c1", "coord.c2", "op.demo.counter-0", "op.demo.counter-1", "op.orders.orders-0", "loadgen.feed"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("users %v, want %v", names, wantNames)
	}
	op := byName["op.demo.counter-0"]
	for _, want := range []string{"cairn.ack.demo.counter-0", "$KV.CAIRN_LEASES.instance.demo.counter-0", "$KV.CAIRN_INSTANCES.demo.counter-0", "$O.CAIRN_SNAPSHOTS_demo.C.>", "cairn.output.demo.counter-0",
		"$JS.API.CONSUMER.CREATE.CAIRN_INPUT.*.cairn.input.demo.counter-0", "$JS.API.DIRECT.GET.KV_CAIRN_MANIFESTS.$KV.CAIRN_MANIFESTS.demo.>"} {
		if !slices.Contains(op.Permissions.Publish, want) {
			t.Errorf("operator may not publish %s", want)
		}
	}
	for _, s := range op.Permissions.Publish {
		for _, other := range []string{"counter-1", "orders", "cairn.barrier", "cairn.config", ".*.*", "STREAM.MSG.GET.KV_CAIRN_MANIFESTS", "PURGE", "_INBOX"} {
			if strings.Contains(s, other) {
				t.Errorf("operator counter-0 of demo may publish %s", s)
			}
		}
	}
	if !slices.Equal(op.Permissions.Subscribe[:1], []string{"_INBOX.op.demo.counter-0.>"}) || op.InboxPrefix != "_INBOX.op.demo.counter-0" {
		t.Errorf("operator subscribes %v with inbox prefix %s", op.Permissions.Subscribe, op.InboxPrefix)
	}
	// An instance with two input subjects reads through a consumer whose API subject
	// names none: its grant is the stream's.
	orders := byName["op.orders.orders-0"]
	if !slices.Contains(orders.Permissions.Publish, "$JS.API.CONSUMER.CREATE.ORDERS.*") || !slices.Contains(orders.Permissions.Publish, "$JS.API.STREAM.MSG.GET.ORDERS") {
		t.Errorf("orders-0 publishes %v", orders.Permissions.Publish)
	}
	c2 := byName["coord.c2"]
	if !slices.Equal(c2.Jobs, []string{"demo"}) || slices.ContainsFunc(c2.Permissions.Publish, func(s string) bool { return strings.Contains(s, "orders") || strings.Contains(s, "ORDERS") }) {
		t.Errorf("coordinator c2 of demo: jobs %v, publish %v", c2.Jobs, c2.Permissions.Publish)
	}
	c1 := byName["coord.c1"]
	for _, want := range []string{"$JS.API.STREAM.PURGE.ORDERS", "$JS.API.STREAM.PURGE.CAIRN_INPUT", "$JS.API.STREAM.CREATE.OBJ_CAIRN_SNAPSHOTS_orders"} {
		if !slices.Contains(c1.Permissions.Publish, want) {
			t.Errorf("coordinator c1 may not publish %s", want)
		}
	}
	for _, u := range users {
		publishesConfig := slices.ContainsFunc(u.Permissions.Publish, func(s string) bool {
			return s == ">" || strings.HasPrefix(s, "cairn.config.events")
		})
		deniesConfig := slices.ContainsFunc(u.Permissions.DenyPublish, func(s string) bool { return strings.HasPrefix(s, "cairn.config.") })
		if publishesConfig && deniesConfig == (u.Role == "configsvc") {
			t.Errorf("%s: publish %v, deny %v", u.Name, u.Permissions.Publish, u.Permissions.DenyPublish)
		}
	}
	feed := byName["loadgen.feed"]
	if !slices.Equal(feed.Permissions.Publish, []string{"cairn.input.demo.counter-0", "cairn.input.demo.counter-1", "$JS.API.STREAM.INFO.CAIRN_INPUT"}) {
		t.Errorf("load generator publishes %v", feed.Permissions.Publish)
	}
	// The migrations add what they name, and only then.
	spec := twoJobs()
	spec.LegacyAcks, spec.LegacySnapshots = true, true
	legacy, err := authgen.Generate(spec, authgen.NoSeeds)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range legacy {
		if u.Name == "op.demo.counter-0" && (!slices.Contains(u.Permissions.Publish, "cairn.ack.demo") || !slices.Contains(u.Permissions.Publish, "$JS.API.CONSUMER.CREATE.OBJ_CAIRN_SNAPSHOTS.>")) {
			t.Errorf("with the migrations, operator publishes %v", u.Permissions.Publish)
		}
	}
	if slices.Contains(op.Permissions.Publish, "cairn.ack.demo") {
		t.Error("without legacy_acks, operator may ack on its job's subject")
	}
}

func TestWriteFilesKeepsSeedsAndRemovesStaleUsers(t *testing.T) {
	dir := t.TempDir()
	first, err := authgen.WriteFiles(dir, twoJobs(), "spec.json", []string{"nats", "127.0.0.1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, authgen.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		mode fs.FileMode
	}{
		{authgen.AuthFile, 0o644}, {authgen.CAFile, 0o644}, {authgen.CertFile, 0o644}, {authgen.KeyFile, 0o600},
		{filepath.Join(authgen.NKeyDir, "op.demo.counter-0.nk"), 0o600}, {filepath.Join(authgen.EnvDir, "coord.c1.env"), 0o600},
	} {
		st, err := os.Stat(filepath.Join(dir, f.name))
		if err != nil || st.Mode().Perm() != f.mode {
			t.Errorf("%s: %v, mode %v, want %v", f.name, err, st.Mode().Perm(), f.mode)
		}
	}
	env, err := os.ReadFile(filepath.Join(dir, authgen.EnvDir, "coord.c1.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NATS_NKEY_SEED=SU", "NATS_INBOX_PREFIX=_INBOX.coord.c1\n", "CAIRN_JOBS=demo,orders\n", "CAIRN_TRIM_STREAMS=ORDERS\n"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("coord.c1.env lacks %q:\n%s", want, env)
		}
	}
	env, err = os.ReadFile(filepath.Join(dir, authgen.EnvDir, "op.orders.orders-0.env"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "CAIRN_INPUT_STREAM=ORDERS\nCAIRN_INPUT_SUBJECT=orders.eu.orders-0,orders.us.orders-0\n") {
		t.Errorf("orders-0's environment lacks its input:\n%s", env)
	}

	// Again with an instance fewer: the others keep their nkeys and the certificate stays.
	spec := twoJobs()
	spec.Jobs[0].Instances = spec.Jobs[0].Instances[:1]
	second, err := authgen.WriteFiles(dir, spec, "spec.json", []string{"nats", "127.0.0.1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != len(first)-1 || second[2].PublicKey != first[2].PublicKey {
		t.Fatalf("regenerated users changed keys: %v then %v", first[2].PublicKey, second[2].PublicKey)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, authgen.CAFile)); !bytes.Equal(again, ca) {
		t.Error("the CA changed without --rotate")
	}
	for _, gone := range []string{filepath.Join(authgen.NKeyDir, "op.demo.counter-1.nk"), filepath.Join(authgen.EnvDir, "op.demo.counter-1.env")} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of a user no longer in the spec: %v", gone, err)
		}
	}
	rotated, err := authgen.WriteFiles(dir, spec, "spec.json", []string{"nats"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if rotated[2].PublicKey == second[2].PublicKey {
		t.Error("--rotate kept a user's nkey")
	}
	if again, _ := os.ReadFile(filepath.Join(dir, authgen.CAFile)); bytes.Equal(again, ca) {
		t.Error("--rotate kept the CA")
	}
}

// TestGeneratedAuthOnTLS runs a nats-server with the generated config and certificate:
// a user connects with its nkey and inbox prefix, verifying the server against the CA; a
// client without the CA is refused by its own verification, one without a credential by
// the server, and one with another user's inbox prefix cannot get replies.
func TestGeneratedAuthOnTLS(t *testing.T) {
	dir := t.TempDir()
	users, err := authgen.WriteFiles(dir, twoJobs(), "spec.json", []string{"localhost", "127.0.0.1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := os.ReadFile(filepath.Join(dir, authgen.AuthFile))
	if err != nil {
		t.Fatal(err)
	}
	conf := "tls { cert_file: " + quote(filepath.Join(dir, authgen.CertFile)) + ", key_file: " + quote(filepath.Join(dir, authgen.KeyFile)) + " }\n" + string(auth)
	srv := natstest.StartConfig(t, conf, &natstest.LogBuffer{})
	ca := filepath.Join(dir, authgen.CAFile)
	op := users[4]
	if op.Name != "op.demo.counter-0" {
		t.Fatalf("user 4 is %s", op.Name)
	}
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: srv.URL, NKeyFile: filepath.Join(dir, authgen.NKeyDir, op.Name+".nk"), CA: ca, InboxPrefix: op.InboxPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !nc.TLSRequired() {
		t.Fatal("the connection is not TLS")
	}
	// A request round trip through the user's own inbox: the lease bucket's info.
	if _, err := nc.Request("$JS.API.STREAM.INFO."+"KV_"+cairnjs.LeaseBucket, nil, 5*time.Second); err != nil {
		t.Fatalf("request as %s: %v", op.Name, err)
	}

	noCA := tryConnect(srv.URL, nats.Nkey(op.PublicKey, sign(t, op.Seed)))
	var unknown x509.UnknownAuthorityError
	if !errors.As(noCA, &unknown) && !strings.Contains(fmtErr(noCA), "certificate signed by unknown authority") {
		t.Fatalf("a client without the CA: %v, want the server's certificate refused", noCA)
	}
	anonymous := tryConnect(srv.URL, nats.RootCAs(ca))
	if !errors.Is(anonymous, nats.ErrAuthorization) && !strings.Contains(fmtErr(anonymous), "Authorization Violation") {
		t.Fatalf("an anonymous client: %v, want an authorization violation", anonymous)
	}
	wrongHost := tryConnect(strings.Replace(srv.URL, "127.0.0.1", "127.0.0.2", 1), nats.RootCAs(ca), nats.Nkey(op.PublicKey, sign(t, op.Seed)))
	if wrongHost == nil {
		t.Fatal("a certificate for localhost and 127.0.0.1 was accepted for 127.0.0.2")
	}
	// With the default _INBOX prefix the user may not subscribe to its replies.
	plain, err := nats.Connect(srv.URL, nats.RootCAs(ca), nats.Nkey(op.PublicKey, sign(t, op.Seed)), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Request("$JS.API.STREAM.INFO."+"KV_"+cairnjs.LeaseBucket, nil, time.Second); err == nil {
		t.Fatal("a request with replies on _INBOX was answered")
	}
}

func quote(s string) string { return `"` + s + `"` }

func tryConnect(url string, opts ...nats.Option) error {
	nc, err := nats.Connect(url, append(opts, nats.Timeout(5*time.Second))...)
	if err == nil {
		nc.Close()
	}
	return err
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// sign signs nonces with seed's key.
func sign(t *testing.T, seed []byte) nats.SignatureHandler {
	t.Helper()
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Sign
}

// TestSecurityDocHasTheGeneratedTables: docs/security.md shows the rules as this build
// renders them (cairn auth --table), so the two cannot drift.
func TestSecurityDocHasTheGeneratedTables(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := authgen.WriteTable(&want); err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(doc, []byte(authgen.TableBegin))
	end := bytes.Index(doc, []byte(authgen.TableEnd))
	if start < 0 || end < start {
		t.Fatalf("docs/security.md has no generated tables between %q and %q", authgen.TableBegin, authgen.TableEnd)
	}
	if got := doc[start : end+len(authgen.TableEnd)+1]; !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("docs/security.md's tables differ from `cairn auth --table`; replace them with its output:\n%s", want.String())
	}
}
