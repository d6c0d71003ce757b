package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

func TestOnlyOneKeeperHoldsTheLease(t *testing.T) {
	srv := natstest.Start(t)
	_, _, res := srv.Resources(t, cjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	states := make(chan struct {
		who string
		st  leaseState
	}, 100)
	for _, who := range []string{"a", "b"} {
		out := make(chan leaseState, 10)
		k := &leaseKeeper{kv: res.Leases, key: cjs.LeaseKey("j"), job: "j", holder: who, ttl: time.Second, out: out, log: zerolog.Nop()}
		go k.run(ctx)
		go func() {
			for st := range out {
				states <- struct {
					who string
					st  leaseState
				}{who, st}
			}
		}()
	}
	held := map[string]bool{}
	deadline := time.After(3 * time.Second)
	for {
		select {
		case s := <-states:
			held[s.who] = s.st.held
			if held["a"] && held["b"] {
				t.Fatalf("both keepers hold the lease")
			}
		case <-deadline:
			if !held["a"] && !held["b"] {
				t.Fatal("no keeper holds the lease")
			}
			return
		}
	}
}
