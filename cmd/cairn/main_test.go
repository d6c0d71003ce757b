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
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
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
