package store

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// StreamPurger purges messages of a stream (jetstream.Stream).
type StreamPurger interface {
	Purge(ctx context.Context, opts ...jetstream.StreamPurgeOpt) error
}

// Trimmer removes the input that no retained checkpoint needs any more: for every member,
// the messages of its input subjects below the positions of the oldest retained manifest
// that holds it. It runs on the retention worker's goroutine.
type Trimmer struct {
	// streams are the streams trimmed: CAIRN_INPUT and those named in Config.TrimStreams.
	streams []string
	// lookup returns a stream by name.
	lookup func(ctx context.Context, name string) (StreamPurger, error)
	log    zerolog.Logger

	found map[string]StreamPurger
	// done is the purge sequence last applied per stream and filter.
	done map[trimTarget]uint64
}

// trimTarget is one filter of one stream.
type trimTarget struct {
	stream, filter string
}

// NewTrimmer returns a trimmer of streams, looked up with lookup, that logs to log.
func NewTrimmer(streams []string, lookup func(ctx context.Context, name string) (StreamPurger, error), log zerolog.Logger) *Trimmer {
	return &Trimmer{streams: streams, lookup: lookup, log: log, found: map[string]StreamPurger{}, done: map[trimTarget]uint64{}}
}

// trim purges below the trim points of held, skipping those that did not advance since
// the last purge.
func (t *Trimmer) trim(ctx context.Context, held []*messages.Manifest) error {
	points := trimPoints(held, t.streams)
	for target := range t.done {
		if _, ok := points[target]; !ok {
			delete(t.done, target) // no held manifest reads it any more
		}
	}
	for _, target := range slices.SortedFunc(maps.Keys(points), func(a, b trimTarget) int {
		return strings.Compare(a.stream+" "+a.filter, b.stream+" "+b.filter)
	}) {
		seq := points[target]
		if seq <= t.done[target] {
			continue
		}
		st, ok := t.found[target.stream]
		if !ok {
			var err error
			if st, err = t.lookup(ctx, target.stream); err != nil {
				return fmt.Errorf("trim: look up stream %s: %w", target.stream, err)
			}
			t.found[target.stream] = st
		}
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(target.filter), jetstream.WithPurgeSequence(seq)); err != nil {
			return fmt.Errorf("trim %s %s below %d: %w", target.stream, target.filter, seq, err)
		}
		t.done[target] = seq
		t.log.Debug().Str("stream", target.stream).Str("filter", target.filter).Uint64("below", seq).Msg("input trimmed")
	}
	return nil
}

// inputNeed is what one member needs of one stream: the messages of its filters from pos
// on (the position of its oldest held state; the message at pos itself is kept).
type inputNeed struct {
	pos     uint64
	filters []string
	// unknown is set when a held manifest gives the member a position in the stream but
	// no filters (manifests written before filters existed): it is never trimmed.
	unknown bool
}

// trimPoints computes, for every filter of every member in streams, the sequence below
// which its messages may be purged: the lowest position, over held, of every member whose
// filters overlap it (an overlapping filter may match another member's input). held are
// the manifests whose input must stay available — the retained ones and the savepoints.
func trimPoints(held []*messages.Manifest, streams []string) map[trimTarget]uint64 {
	points := map[trimTarget]uint64{}
	for _, stream := range streams {
		needs := map[string]*inputNeed{}
		for _, m := range held {
			for inst, s := range m.Instances {
				pos, hasPos := s.Positions[stream]
				filters, hasFilters := s.Filters[stream]
				if !hasPos && !hasFilters {
					continue
				}
				n := needs[inst]
				if n == nil {
					n = &inputNeed{pos: math.MaxUint64}
					needs[inst] = n
				}
				if !hasFilters {
					n.unknown = true
				}
				n.pos = min(n.pos, pos)
				for _, f := range filters {
					if !slices.Contains(n.filters, f) {
						n.filters = append(n.filters, f)
					}
				}
			}
		}
		for _, n := range needs {
			if n.unknown {
				continue
			}
			for _, f := range n.filters {
				seq := n.pos
				for _, other := range needs {
					if other.unknown {
						continue
					}
					for _, g := range other.filters {
						if subjectsOverlap(f, g) {
							seq = min(seq, other.pos)
						}
					}
				}
				target := trimTarget{stream, f}
				if cur, ok := points[target]; !ok || seq < cur {
					points[target] = seq
				}
			}
		}
	}
	for target, seq := range points {
		if seq <= 1 {
			delete(points, target) // nothing below sequence 1
		}
	}
	return points
}

// subjectsOverlap reports whether some subject matches both filters (NATS wildcards: "*"
// one token, ">" one or more trailing tokens).
func subjectsOverlap(a, b string) bool {
	x, y := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(x) && i == len(y):
			return true
		case i == len(x) || i == len(y):
			return false
		case x[i] == ">" || y[i] == ">":
			return true
		case x[i] != "*" && y[i] != "*" && x[i] != y[i]:
			return false
		}
	}
}
