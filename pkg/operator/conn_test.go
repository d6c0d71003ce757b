package operator_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/operator"
)

// TestNewWarnsAboutAConnectionThatHoldsOnToAHungServer: New warns, and still returns a
// Runtime, when the embedder's connection would notice a hung server only after minutes
// or gives up reconnecting; a connection made by pkg/cairnjs.Connect draws no warning.
func TestNewWarnsAboutAConnectionThatHoldsOnToAHungServer(t *testing.T) {
	s := natstest.Start(t)
	e := newEnvOn(t, s)
	_ = e.newRuntime(operator.DefaultConfig(testJob, "good"), &blobMachine{size: 8})
	if e.logged(`"level":"warn"`) {
		t.Fatalf("a pkg/cairnjs.Connect connection drew a warning:\n%s", e.logs)
	}

	plain, err := nats.Connect(s.URL) // nats.go's defaults: pings every 2 minutes, 60 reconnects
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	cfg := operator.DefaultConfig(testJob, "plain")
	cfg.Logger = e.logger()
	if _, err := operator.New(plain, cfg, &blobMachine{size: 8}); err != nil {
		t.Fatalf("New refused a connection with nats.go's defaults: %v", err)
	}
	for _, want := range [][]string{
		{`"level":"warn"`, `"instance":"plain"`, `"notice_after":360000`, "nats.PingInterval(3*time.Second)"},
		{`"level":"warn"`, `"instance":"plain"`, `"max_reconnects":60`, "nats.MaxReconnects(-1)"},
	} {
		if !e.logged(want...) {
			t.Errorf("no warning with %q:\n%s", want, e.logs)
		}
	}
}
