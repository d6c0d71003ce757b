package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// syncBuffer collects a process's stderr while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestOperatorWithoutUsableSnapshotExitsNonZero(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := natstest.Start(t)
	_, js, res := s.Resources(t, cairnjs.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cairnjs.EnsureSnapshotStore(ctx, js, cairnjs.Options{}, "orders"); err != nil {
		t.Fatal(err)
	}
	// A manifest holds counter-0, but its snapshot object was never stored.
	data, err := messages.Marshal(&messages.Manifest{
		Schema: messages.SchemaVersion, Job: "orders", CheckpointID: 3, ConfigVersion: 1,
		TriggeredAt: time.Now().UTC(), CompletedAt: time.Now().UTC(),
		Instances: map[string]messages.InstanceSnapshot{"counter-0": {
			Incarnation: "gone",
			Snapshot:    messages.SnapshotRef{Store: cairnjs.SnapshotStore("orders"), Object: cairnjs.ObjectName("orders", 3, "counter-0", "sim"), Size: 10, Digest: "SHA-256=x"},
			Positions:   map[string]uint64{cairnjs.InputStream: 7},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{cairnjs.ManifestKey("orders", 3), cairnjs.LatestKey("orders")} {
		if _, err := res.Manifests.Put(ctx, k, data); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildCairn(t)

	cmd := exec.CommandContext(ctx, bin, "operator", "--nats-url", s.URL, "--job", "orders", "--instance", "counter-0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("cairn operator: %v, want exit status 1\n%s", err, stderr.String())
	}
	found := false
	for line := range strings.Lines(stderr.String()) {
		if strings.Contains(line, `"level":"error"`) && strings.Contains(line, `"job":"orders"`) && strings.Contains(line, `"instance":"counter-0"`) &&
			strings.Contains(line, "refusing to start: this member has no usable snapshot") && strings.Contains(line, "object orders/3/counter-0/sim missing") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no ERROR line naming the job, the instance and the missing object:\n%s", stderr.String())
	}

	// --restore-from a savepoint that does not exist is refused the same way.
	cmd = exec.CommandContext(ctx, bin, "operator", "--nats-url", s.URL, "--job", "orders", "--instance", "counter-0", "--restore-from", "nope")
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Run(); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("cairn operator --restore-from nope: %v, want exit status 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "refusing to start: the checkpoint --restore-from names cannot be restored") ||
		!strings.Contains(stderr.String(), "savepoint nope does not exist") {
		t.Fatalf("no ERROR line saying the savepoint does not exist:\n%s", stderr.String())
	}

	// CAIRN_RESET_STATE starts it empty on purpose; SIGTERM then stops it cleanly.
	cmd = exec.CommandContext(ctx, bin, "operator", "--nats-url", s.URL, "--job", "orders", "--instance", "counter-0")
	cmd.Env = append(os.Environ(), "CAIRN_RESET_STATE=true")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			_, _ = logs.Write(append(sc.Bytes(), '\n'))
			if strings.Contains(sc.Text(), `"message":"operator running"`) {
				once.Do(func() { close(running) })
			}
		}
	}()
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("operator with CAIRN_RESET_STATE did not start:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "reset state") {
		t.Fatalf("reset not logged at warn level:\n%s", logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("operator after SIGTERM: %v\n%s", err, logs.String())
	}
}
