package proctest

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcReadyExitAndRestart(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	script := `echo '{"level":"info","incarnation":"inc-1","message":"operator running"}'; ` +
		`echo '{"level":"error","incarnation":"inc-1","replaced_by":"inc-2","message":"replaced"}'; ` +
		`[ "$1" = wait ] && exec sleep 60; exit 3`
	exits := make(chan error, 1)
	p, err := New("sh", filepath.Join(t.TempDir(), "sh.log"), sh, nil, "-c", script, "sh")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.OnExit = func(_ *Proc, err error) { exits <- err }
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 3 {
		t.Fatalf("exit code %d, %v; want 3", code, err)
	}
	if err := <-exits; err == nil {
		t.Fatal("OnExit got no error for exit status 3")
	}
	if p.Incarnation() != "inc-1" || len(p.Lines()) != 2 || !strings.Contains(p.Lines()[1], "inc-2") {
		t.Fatalf("incarnation %q, lines %q", p.Incarnation(), p.Lines())
	}

	// A run stopped by the test does not reach OnExit.
	if err := p.StartWith("wait"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, code, err := p.Signal(syscall.SIGTERM, 5*time.Second); err != nil || code != -1 {
		t.Fatalf("SIGTERM: code %d, %v; want -1 (ended by the signal)", code, err)
	}
	select {
	case err := <-exits:
		t.Fatalf("OnExit called for a run the test stopped: %v", err)
	default:
	}
	if p.Runs() != 2 || !strings.Contains(p.Tail(1), "run exited") {
		t.Fatalf("runs %d, log tail %q", p.Runs(), p.Tail(1))
	}
}
