package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
)

// buildCairn builds the cairn binary once per test binary run.
func buildCairn(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cairn")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestUsageAndUnknownCommands(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no command", nil, 2},
		{"help", []string{"help"}, 0},
		{"unknown command", []string{"bogus"}, 2},
		{"unknown flag", []string{"coordinator", "--bogus"}, 2},
		{"bad job list", []string{"coordinator", "--jobs", "a.b"}, 1},
		{"bad trim stream", []string{"coordinator", "--trim-streams", "IN.PUT"}, 1},
		{"operator without a job", []string{"operator", "--instance", "i"}, 1},
		{"operator with an unknown poison policy", []string{"operator", "--job", "j", "--instance", "i", "--on-poison", "skip"}, 1},
		{"bad log level", []string{"configsvc", "--log-level", "loud"}, 1},
		{"dev with too many operators", []string{"dev", "--operators", "100"}, 1},
		{"dev with fewer than no operators", []string{"dev", "--operators", "-1"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := run(context.Background(), tt.args, io.Discard); got != tt.code {
				t.Fatalf("exit code %d, want %d", got, tt.code)
			}
		})
	}
}

var urlInLog = regexp.MustCompile(`url=(nats://[0-9.]+:[0-9]+)`)

func TestDevRunsAndDrainsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCairn(t)
	cmd := exec.Command(bin, "dev", "--port", "-1", "--store", t.TempDir())
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := urlInLog.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
	}()
	var url string
	select {
	case url = <-urls:
	case <-time.After(30 * time.Second):
		t.Fatal("cairn dev logged no NATS url within 30s")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var st messages.Status
	natstest.Eventually(t, 20*time.Second, "cairn dev: status of demo shows 3 instances", func() bool {
		m, err := nc.Request("cairn.status.demo", nil, time.Second)
		return err == nil && m.Header.Get("Nats-Service-Error-Code") == "" && json.Unmarshal(m.Data, &st) == nil && len(st.Instances) == 3
	})
	if st.Config.Version != 0 || st.EffectiveInterval != "10s" {
		t.Fatalf("demo should run on the defaults (version 0, 10s): %+v", st)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) || err != nil {
			t.Fatalf("cairn dev after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cairn dev did not exit within 20s of SIGTERM")
	}
}

var servicesInLog = regexp.MustCompile(`Cairn dev is up.* services=([a-z0-9,-]+)`)

// TestDevWithoutOperators runs cairn dev --operators 0 in the test's process: NATS,
// configsvc and a coordinator answer, and neither reference operator nor load generator
// runs, so the demo job gets no input and no instance.
func TestDevWithoutOperators(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an embedded NATS server and the services")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"dev", "--operators", "0", "--port", "-1", "--store", t.TempDir()}, pw)
		pw.Close()
	}()
	urls, services := make(chan string, 1), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := urlInLog.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
			if m := servicesInLog.FindStringSubmatch(sc.Text()); m != nil {
				services <- m[1]
			}
		}
	}()
	var url, started string
	for url == "" || started == "" {
		select {
		case url = <-urls:
		case started = <-services:
		case c := <-code:
			t.Fatalf("cairn dev --operators 0 exited with %d before it was up", c)
		case <-time.After(30 * time.Second):
			t.Fatal("cairn dev --operators 0 was not up within 30s")
		}
	}
	if started != "configsvc,coordinator" {
		t.Fatalf("cairn dev --operators 0 started %s, want configsvc,coordinator", started)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, svc := range []string{"cairn-config", "cairn-coordinator"} {
		natstest.Eventually(t, 20*time.Second, svc+" answers a micro ping", func() bool {
			_, err := nc.Request("$SRV.PING."+svc, nil, time.Second)
			return err == nil
		})
	}
	if _, err := nc.Request("$SRV.PING.cairn-operator", nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a reference operator answers a micro ping: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	in, err := js.Stream(ctx, cairnjs.InputStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := in.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("input stream %s: %v, %+v: want no message, no load generator runs", cairnjs.InputStream, err, info)
	}

	// An operator of one's own, on pkg/operator's defaults (the job's own snapshot store),
	// gets its checkpoints completed by dev's coordinator.
	opCtx, stopOp := context.WithCancel(ctx)
	opDone := make(chan error, 1)
	go func() {
		opDone <- op.Run(opCtx, nc, op.DefaultConfig("own", "own-0"), &countMachine{})
	}()
	natstest.Eventually(t, 30*time.Second, "a checkpoint of job own completes", func() bool {
		m, err := nc.Request("cairn.checkpoint.trigger.own", nil, 10*time.Second)
		var res messages.CheckpointResult
		return err == nil && json.Unmarshal(m.Data, &res) == nil && res.Outcome == "completed"
	})
	stopOp()
	if err := <-opDone; err != nil {
		t.Fatalf("operator of job own: %v", err)
	}

	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("cairn dev --operators 0 exited with %d after its context ended, want 0", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cairn dev --operators 0 did not stop within 20s")
	}
}

// countMachine counts the records it applied: a Machine of one's own.
type countMachine struct{ n int }

func (m *countMachine) Apply(op.Record) error { m.n++; return nil }

func (m *countMachine) Snapshot() (op.Snapshot, error) {
	return op.BytesSnapshot([]byte(strconv.Itoa(m.n))), nil
}

func (m *countMachine) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return err
	}
	m.n = n
	return nil
}
