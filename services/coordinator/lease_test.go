package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestOnlyOneKeeperHoldsTheLease(t *testing.T) {
	srv := natstest.Start(t)
	nc, _, res := srv.Resources(t, cjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	states := make(chan struct {
		who string
		st  leaseState
	}, 100)
	for _, who := range []string{"a", "b"} {
		out := make(chan leaseState, 10)
		k := &leaseKeeper{kv: res.Leases, conn: nc, key: cjs.LeaseKey("j"), job: "j", holder: who, ttl: time.Second, out: out, log: zerolog.Nop()}
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

// ghostKV is a lease bucket in which a renewal of ours landed although its reply was lost:
// the key names us at a revision we never saw.
type ghostKV struct {
	leaseKV
	value   []byte
	rev     uint64
	updates []uint64
}

func (g *ghostKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return entry{value: g.value, rev: g.rev}, nil
}

func (g *ghostKV) Update(_ context.Context, _ string, v []byte, rev uint64) (uint64, error) {
	g.updates = append(g.updates, rev)
	if rev != g.rev {
		return 0, jetstream.ErrKeyRevisionMismatch
	}
	g.rev++
	return g.rev, nil
}

type entry struct {
	jetstream.KeyValueEntry
	value []byte
	rev   uint64
}

func (e entry) Value() []byte    { return e.value }
func (e entry) Revision() uint64 { return e.rev }

func TestLeaseKeeperAdoptsItsOwnLostWrite(t *testing.T) {
	for _, tc := range []struct {
		holder   string
		wantHeld bool
	}{{"me", true}, {"someone-else", false}} {
		t.Run(tc.holder, func(t *testing.T) {
			value, err := messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: "j", Holder: tc.holder})
			if err != nil {
				t.Fatal(err)
			}
			kv := &ghostKV{value: value, rev: 9}
			out := make(chan leaseState, 4)
			k := &leaseKeeper{kv: kv, key: "leader.j", job: "j", holder: "me", ttl: time.Second, out: out, log: zerolog.Nop(),
				rev: 7, state: leaseState{held: true, validUntil: time.Now().Add(time.Second), holder: "me"}}
			k.value, _ = messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: "j", Holder: "me"})
			k.step(context.Background())
			st := <-out
			if st.held != tc.wantHeld {
				t.Fatalf("held = %v after a lost write by %s, want %v (updates at revisions %v)", st.held, tc.holder, tc.wantHeld, kv.updates)
			}
			if tc.wantHeld && k.rev != 10 {
				t.Fatalf("revision %d, want 10 (adopted 9, renewed)", k.rev)
			}
		})
	}
}

// fixedPlace prefers one replica for every job.
type fixedPlace string

func (p fixedPlace) preferred(string) string  { return string(p) }
func (p fixedPlace) changes() <-chan struct{} { return nil }

func TestLeaseKeeperLeavesTheLeaseToThePreferredReplica(t *testing.T) {
	now := time.Now()
	ttl := time.Second
	for _, tc := range []struct {
		name  string
		k     leaseKeeper
		want  time.Duration
		check func(k *leaseKeeper) bool
	}{
		{name: "no placement", k: leaseKeeper{}, want: 0},
		{name: "preferred", k: leaseKeeper{place: fixedPlace("me")}, want: 0},
		{name: "free for half the grace period", k: leaseKeeper{place: fixedPlace("other"), free: true, freeSince: now.Add(-ttl / 2)}, want: ttl / 2},
		{name: "free for the grace period", k: leaseKeeper{place: fixedPlace("other"), free: true, freeSince: now.Add(-ttl)}, want: 0},
		{name: "renewed by another a TTL ago", k: leaseKeeper{place: fixedPlace("other"), seenRev: 3, seenAt: now.Add(-ttl)}, want: ttl},
		{name: "unknown: the grace period from now", k: leaseKeeper{place: fixedPlace("other")}, want: ttl,
			check: func(k *leaseKeeper) bool { return k.free && k.freeSince.Equal(now) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.k
			k.holder, k.ttl = "me", ttl
			if got := max(k.holdOff(now), 0); got != tc.want {
				t.Fatalf("holdOff = %s, want %s", got, tc.want)
			}
			if tc.check != nil && !tc.check(&k) {
				t.Fatalf("state after holdOff: %+v", k)
			}
		})
	}
}

func TestLeaseKeeperBacksOffHandingOverToAReplicaThatDidNotTakeIt(t *testing.T) {
	k := &leaseKeeper{holder: "me", ttl: time.Second, place: fixedPlace("slow")}
	now := time.Now()
	var got []time.Duration
	for range 8 {
		k.keep("slow", now)
		got = append(got, k.keepUntil.Sub(now))
	}
	want := []time.Duration{2, 4, 8, 16, 32, 64, 64, 64}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("kept for %v, want %v seconds", got, want)
		}
	}
	if to := k.handOverTo(); to != "" {
		t.Fatalf("hands over to %q while keeping it", to)
	}
	k.keep("other", now)
	if k.keepUntil.Sub(now) != 2*time.Second {
		t.Fatalf("another replica's first refusal kept it for %s, want 2s", k.keepUntil.Sub(now))
	}
}
