package store

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

func TestOnlyOneKeeperHoldsTheLease(t *testing.T) {
	srv := natstest.Start(t)
	nc, _, res := srv.Resources(t, cairnjs.Options{LeaseTTL: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	held := map[string]bool{}
	both := false
	for _, who := range []string{"a", "b"} {
		out := func(st loop.Lease) {
			mu.Lock()
			defer mu.Unlock()
			held[who] = st.Held
			both = both || (held["a"] && held["b"])
		}
		k := &LeaseKeeper{kv: res.Leases, conn: nc, leader: nc, key: cairnjs.LeaseKey("j"), job: "j", holder: who, ttl: time.Second, out: out, log: zerolog.Nop()}
		go k.Run(ctx)
	}
	// The observation window: three TTLs in which the two keepers never hold the lease at once.
	<-time.After(3 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if both {
		t.Fatal("both keepers held the lease at once")
	}
	if !held["a"] && !held["b"] {
		t.Fatal("no keeper holds the lease")
	}
}

// TestLeaseKeeperAdoptsItsOwnLostWrite reproduces on a real server a renewal of ours that
// landed although its reply was lost: the key was written with the holder's value at a
// revision the keeper never saw. The keeper adopts that revision when the value names it,
// and reports the lease lost when it names another coordinator.
func TestLeaseKeeperAdoptsItsOwnLostWrite(t *testing.T) {
	srv := natstest.Start(t)
	nc, _, res := srv.Resources(t, cairnjs.Options{LeaseTTL: time.Minute})
	ctx := context.Background()
	for _, tc := range []struct {
		holder   string
		wantHeld bool
	}{{"me", true}, {"someone-else", false}} {
		t.Run(tc.holder, func(t *testing.T) {
			key := cairnjs.LeaseKey("j-" + strings.ReplaceAll(tc.holder, "-", ""))
			mine, err := messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: "j", Holder: "me"})
			if err != nil {
				t.Fatal(err)
			}
			ghost, err := messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: "j", Holder: tc.holder})
			if err != nil {
				t.Fatal(err)
			}
			seen, err := res.Leases.Create(ctx, key, mine)
			if err != nil {
				t.Fatal(err)
			}
			// The write whose reply was lost: it moved the key past the revision the
			// keeper knows.
			landed, err := res.Leases.Update(ctx, key, ghost, seen)
			if err != nil {
				t.Fatal(err)
			}
			var got []loop.Lease
			k := &LeaseKeeper{kv: res.Leases, leader: nc, key: key, job: "j", holder: "me", ttl: time.Minute, log: zerolog.Nop(),
				out: func(st loop.Lease) { got = append(got, st) },
				rev: seen, value: mine, state: loop.Lease{Held: true, ValidUntil: time.Now().Add(time.Minute), Holder: "me", Rev: seen, Tenure: seen}}
			k.step(ctx)
			if len(got) != 1 || got[0].Held != tc.wantHeld {
				t.Fatalf("reported %+v after a lost write by %s, want held=%v", got, tc.holder, tc.wantHeld)
			}
			if !tc.wantHeld {
				return
			}
			e, err := res.Leases.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if k.rev != e.Revision() || k.rev <= landed || got[0].Rev != k.rev || got[0].Tenure != seen {
				t.Fatalf("keeper at revision %d (reported %+v), key at %d, lost write at %d: want the lost write adopted and renewed in the same tenure %d",
					k.rev, got[0], e.Revision(), landed, seen)
			}
		})
	}
}

// fixedPlace prefers one replica for every job.
type fixedPlace string

func (p fixedPlace) Preferred(string) string  { return string(p) }
func (p fixedPlace) Changes() <-chan struct{} { return nil }

func TestLeaseKeeperLeavesTheLeaseToThePreferredReplica(t *testing.T) {
	now := time.Now()
	ttl := time.Second
	for _, tc := range []struct {
		name  string
		k     LeaseKeeper
		want  time.Duration
		check func(k *LeaseKeeper) bool
	}{
		{name: "no placement", k: LeaseKeeper{}, want: 0},
		{name: "preferred", k: LeaseKeeper{place: fixedPlace("me")}, want: 0},
		{name: "free for half the grace period", k: LeaseKeeper{place: fixedPlace("other"), free: true, freeSince: now.Add(-ttl / 2)}, want: ttl / 2},
		{name: "free for the grace period", k: LeaseKeeper{place: fixedPlace("other"), free: true, freeSince: now.Add(-ttl)}, want: 0},
		{name: "renewed by another a TTL ago", k: LeaseKeeper{place: fixedPlace("other"), seenRev: 3, seenAt: now.Add(-ttl)}, want: ttl},
		{name: "unknown: the grace period from now", k: LeaseKeeper{place: fixedPlace("other")}, want: ttl,
			check: func(k *LeaseKeeper) bool { return k.free && k.freeSince.Equal(now) }},
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
	k := &LeaseKeeper{holder: "me", ttl: time.Second, place: fixedPlace("slow")}
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
