//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
)

// envFile holds the sample settings the stacks run with; the tests never create a .env.
const envFile = ".env.example"

// authDir is where `make up` has `cairn auth` write the stacks' users, seeds and
// certificates (the Makefile's AUTH_DIR), relative to the repository root.
const authDir = "deploy/nats/generated"

// Generated users the tests connect as.
const (
	admin    = "admin.admin"
	operator = "op." + job + ".counter-0"
)

// stack is one compose project started through the Makefile.
type stack struct {
	// project is the compose project name.
	project string
	// files are the compose files, in order.
	files []string
	// ports are the 127.0.0.1 ports NATS is published on, one per node.
	ports []int
	// env are the variables every make, compose and docker command gets.
	env []string
}

// startStack brings a stack up with `make up` (or `make up-cluster`) on free ports and tears
// it down with `make down` when the test ends; on failure it logs the services' last lines
// first.
func startStack(t *testing.T, cluster bool) *stack {
	t.Helper()
	s := &stack{project: "cairn-e2e", files: []string{"compose.yaml"}}
	up, down, projectVar := "up", "down", "PROJECT"
	nodes := 1
	if cluster {
		s.project += "-cluster"
		s.files = append(s.files, "compose.cluster.yaml")
		up, down, projectVar = "up-cluster", "down-cluster", "CLUSTER_PROJECT"
		nodes = 3
	}
	portVars := []string{"CAIRN_NATS_PORT", "CAIRN_NATS_PORT_2", "CAIRN_NATS_PORT_3"}
	for i := range portVars {
		p := natstest.FreePort(t)
		if i < nodes {
			s.ports = append(s.ports, p)
		}
		s.env = append(s.env, fmt.Sprintf("%s=%d", portVars[i], p))
	}
	makeArgs := []string{projectVar + "=" + s.project, "ENV_FILE=" + envFile}
	// A stack left over by an interrupted run would hold the project's names.
	s.run(t, 5*time.Minute, "make", append([]string{down}, makeArgs...)...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.try(2*time.Minute, "docker-compose", s.compose("logs", "--no-color", "--tail", "15")...)
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := s.try(5*time.Minute, "make", append([]string{down}, makeArgs...)...); err != nil {
			t.Errorf("make %s: %v\n%s", down, err, out)
		}
	})
	start := time.Now()
	s.run(t, 5*time.Minute, "make", append([]string{up}, makeArgs...)...)
	t.Logf("make %s: every service healthy after %s (image build included)", up, time.Since(start).Round(100*time.Millisecond))
	return s
}

// compose returns the docker-compose arguments of the stack followed by args.
func (s *stack) compose(args ...string) []string {
	a := []string{"--env-file", envFile, "-p", s.project}
	for _, f := range s.files {
		a = append(a, "-f", f)
	}
	return append(a, args...)
}

// try runs a command in the repository root with the stack's environment and returns its
// combined output.
func (s *stack) try(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is try that fails the test on error.
func (s *stack) run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := s.try(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// container returns the id of service's container.
func (s *stack) container(t *testing.T, service string) string {
	t.Helper()
	id := strings.TrimSpace(s.run(t, time.Minute, "docker-compose", s.compose("ps", "-q", service)...))
	if id == "" {
		t.Fatalf("service %s has no container", service)
	}
	return id
}

// health returns "<state> <health>" of a container, e.g. "running healthy".
func (s *stack) health(t *testing.T, id string) string {
	t.Helper()
	out := s.run(t, time.Minute, "docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
	return strings.TrimSpace(out)
}

// servers is the --server value naming every node.
func (s *stack) servers() string {
	var urls []string
	for _, p := range s.ports {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return strings.Join(urls, ",")
}

// natsCmd builds a nats CLI command for a generated user ("" for an anonymous
// connection) against servers, isolated from the user's nats contexts: with the user's
// nkey and inbox prefix, and with ca the generated CA to verify the server (TLS).
func (s *stack) natsCmd(ctx context.Context, servers, user string, ca bool, args ...string) *exec.Cmd {
	a := []string{"--no-context", "--server", servers, "--timeout", "5s"}
	if user != "" {
		a = append(a, "--nkey", filepath.Join(root, authDir, "nkeys", user+".nk"))
		if prefix := inboxPrefix(user); prefix != "" {
			a = append(a, "--inbox-prefix", prefix)
		}
	}
	if ca {
		a = append(a, "--tlsca", filepath.Join(root, authDir, "tls", "ca.pem"))
	}
	cmd := exec.CommandContext(ctx, natsCLI, append(a, args...)...)
	cmd.Env = []string{"HOME=" + cliHome, "XDG_CONFIG_HOME=" + filepath.Join(cliHome, ".config"), "PATH=" + os.Getenv("PATH")}
	return cmd
}

// natsAs runs the nats CLI as user and returns its stdout, or an error with its stderr.
func (s *stack) natsAs(user string, args ...string) (string, error) {
	stdout, stderr, err := s.runNats(user, args...)
	if err != nil {
		return stdout, fmt.Errorf("nats %s: %w: %s%s", strings.Join(args, " "), err, stderr, stdout)
	}
	return stdout, nil
}

// runNats runs the nats CLI as user and returns what it printed.
func (s *stack) runNats(user string, args ...string) (stdout, stderr string, err error) {
	return s.runNatsCA(user, true, args...)
}

// runNatsCA runs the nats CLI as user, verifying the server with the generated CA or not,
// and returns what it printed.
func (s *stack) runNatsCA(user string, ca bool, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := s.natsCmd(ctx, s.servers(), user, ca, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// admin runs the nats CLI as admin and fails the test on error.
func (s *stack) admin(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.natsAs(admin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// follow starts a long-running nats CLI command as admin against servers and returns its
// stdout lines, each with the time it arrived; the command stops when the test ends.
func (s *stack) follow(t *testing.T, servers string, args ...string) <-chan line {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := s.natsCmd(ctx, servers, admin, true, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan line, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- line{at: time.Now(), text: sc.Text()}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("nats %s stderr:\n%s", strings.Join(args, " "), stderr.String())
		}
	})
	return lines
}

// line is one line of a followed command's output.
type line struct {
	at   time.Time
	text string
}

// eventually calls check every 500ms until it returns nil or timeout passes, then fails the
// test with what and check's last error.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %s: %v", timeout, what, err)
		}
		<-tick.C
	}
}

// inboxPrefix returns the inbox prefix of a generated user, from its env file; "" when
// it has none (an admin).
func inboxPrefix(user string) string {
	data, err := os.ReadFile(filepath.Join(root, authDir, "env", user+".env"))
	if err != nil {
		return ""
	}
	for l := range strings.Lines(string(data)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "NATS_INBOX_PREFIX="); ok {
			return p
		}
	}
	return ""
}

// atoi parses a decimal number the CLI printed, perhaps with thousands separators
// ("4,084"), or returns -1.
func atoi(s string) int64 {
	n, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(s), ",", ""), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
