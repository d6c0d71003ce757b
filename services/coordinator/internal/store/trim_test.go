package store

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestSubjectsOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"a.b.c", "a.b.c", true},
		{"a.b.c", "a.b.d", false},
		{"a.*.c", "a.b.c", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"a.b", "a.b.c", false},
		{"*.b.>", "a.*.c", true},
		{">", "x", true},
		{"a.*.c", "a.b.*", true},
		{"in.j.x", "in.j.*", true},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			if got := subjectsOverlap(tt.a, tt.b); got != tt.want {
				t.Fatalf("subjectsOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
			if got := subjectsOverlap(tt.b, tt.a); got != tt.want {
				t.Fatalf("subjectsOverlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
			}
		})
	}
}

// held builds a manifest whose members read CAIRN_INPUT: instance → position and filters
// (nil filters: a manifest written before filters existed).
func held(id uint64, members map[string]inputNeed) *messages.Manifest {
	m := &messages.Manifest{CheckpointID: id, Instances: map[string]messages.InstanceSnapshot{}}
	for inst, n := range members {
		s := messages.InstanceSnapshot{Positions: map[string]uint64{cairnjs.InputStream: n.pos}}
		if n.filters != nil {
			s.Filters = map[string][]string{cairnjs.InputStream: n.filters}
		}
		m.Instances[inst] = s
	}
	return m
}

func TestTrimPoints(t *testing.T) {
	in := func(f string) trimTarget { return trimTarget{cairnjs.InputStream, f} }
	tests := []struct {
		name string
		held []*messages.Manifest
		want map[trimTarget]uint64
	}{
		{
			name: "below the oldest retained manifest of each member",
			held: []*messages.Manifest{
				held(9, map[string]inputNeed{"a": {pos: 90, filters: []string{"in.a"}}, "b": {pos: 50, filters: []string{"in.b"}}}),
				held(8, map[string]inputNeed{"a": {pos: 80, filters: []string{"in.a"}}, "b": {pos: 50, filters: []string{"in.b"}}}),
			},
			want: map[trimTarget]uint64{in("in.a"): 80, in("in.b"): 50},
		},
		{
			name: "a member only older manifests hold keeps their position",
			held: []*messages.Manifest{
				held(9, map[string]inputNeed{"a": {pos: 90, filters: []string{"in.a"}}}),
				held(8, map[string]inputNeed{"a": {pos: 80, filters: []string{"in.a"}}, "gone": {pos: 30, filters: []string{"in.gone"}}}),
			},
			want: map[trimTarget]uint64{in("in.a"): 80, in("in.gone"): 30},
		},
		{
			name: "overlapping filters trim only below every overlapping member",
			held: []*messages.Manifest{
				held(9, map[string]inputNeed{
					"all": {pos: 90, filters: []string{"in.*"}},
					"a":   {pos: 40, filters: []string{"in.a"}},
					"x":   {pos: 70, filters: []string{"other.x"}},
				}),
			},
			want: map[trimTarget]uint64{in("in.*"): 40, in("in.a"): 40, in("other.x"): 70},
		},
		{
			name: "a member without filters is never trimmed",
			held: []*messages.Manifest{
				held(9, map[string]inputNeed{"a": {pos: 90, filters: []string{"in.a"}}, "legacy": {pos: 60}}),
				held(8, map[string]inputNeed{"a": {pos: 80}, "legacy": {pos: 50}}),
			},
			want: map[trimTarget]uint64{},
		},
		{
			name: "nothing below sequence 1",
			held: []*messages.Manifest{held(9, map[string]inputNeed{"a": {pos: 1, filters: []string{"in.a"}}, "b": {pos: 0, filters: []string{"in.b"}}})},
			want: map[trimTarget]uint64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trimPoints(tt.held, []string{cairnjs.InputStream}); !maps.Equal(got, tt.want) {
				t.Fatalf("trim points %v, want %v", got, tt.want)
			}
		})
	}
}

// countingPurger counts purges of a stream.
type countingPurger struct {
	StreamPurger
	n int
}

func (c *countingPurger) Purge(ctx context.Context, opts ...jetstream.StreamPurgeOpt) error {
	c.n++
	return c.StreamPurger.Purge(ctx, opts...)
}

func TestTrimPurgesBelowThePointOnlyWhenItAdvances(t *testing.T) {
	srv := natstest.Start(t)
	_, js, res := srv.Resources(t, cairnjs.Options{})
	ctx := context.Background()
	for i := range 10 {
		for _, inst := range []string{"a", "b"} {
			if _, err := js.Publish(ctx, "cairn.input.t."+inst, fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// a's messages are the odd sequences 1..19, b's the even ones 2..20.
	p := &countingPurger{StreamPurger: res.Input}
	tr := NewTrimmer([]string{cairnjs.InputStream}, func(context.Context, string) (StreamPurger, error) { return p, nil }, zerolog.Nop())
	hold := []*messages.Manifest{held(2, map[string]inputNeed{"a": {pos: 11, filters: []string{"cairn.input.t.a"}}, "b": {pos: 6, filters: []string{"cairn.input.t.b"}}})}
	if err := tr.trim(ctx, hold); err != nil {
		t.Fatal(err)
	}
	first := func(subject string) uint64 {
		t.Helper()
		m, err := res.Input.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			t.Fatalf("first message of %s: %v", subject, err)
		}
		return m.Sequence
	}
	if a, b := first("cairn.input.t.a"), first("cairn.input.t.b"); a != 11 || b != 6 {
		t.Fatalf("first left: a %d, b %d; want 11 and 6 (the positions themselves are kept)", a, b)
	}
	if err := tr.trim(ctx, hold); err != nil {
		t.Fatal(err)
	}
	if p.n != 2 {
		t.Fatalf("%d purges, want 2: a trim point that did not advance is skipped", p.n)
	}
}
