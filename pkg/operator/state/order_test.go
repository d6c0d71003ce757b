package state

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// rangeBySort is Range as it was before the Store kept its order: it collects the keys
// under prefix from the whole table and sorts them at every call. The benchmarks
// compare against it.
func rangeBySort(s *Store, prefix []byte, fn func(key, value []byte) bool) {
	var kvs []Record
	s.e.each(func(k, v []byte) bool {
		if bytes.HasPrefix(k, prefix) {
			if _, shadowed := s.over[string(k)]; !shadowed {
				kvs = append(kvs, Record{Key: k, Value: v})
			}
		}
		return true
	})
	for k, v := range s.over {
		if v != nil && strings.HasPrefix(k, string(prefix)) {
			kvs = append(kvs, Record{Key: bytesOf(k), Value: v})
		}
	}
	slices.SortFunc(kvs, func(a, b Record) int { return bytes.Compare(a.Key, b.Key) })
	for _, kv := range kvs {
		if !fn(kv.Key, kv.Value) {
			return
		}
	}
}

// ranged returns the keys and values Range gives for prefix, in its order, stopping
// after limit of them (none: all).
func ranged(s *Store, prefix string, limit int) []string {
	var got []string
	s.Range([]byte(prefix), func(k, v []byte) bool {
		got = append(got, string(k)+"="+string(v))
		return limit == 0 || len(got) < limit
	})
	return got
}

// want returns what Range should give for prefix on the model.
func want(model map[string]string, prefix string, limit int) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(model)) {
		if strings.HasPrefix(k, prefix) && (limit == 0 || len(out) < limit) {
			out = append(out, k+"="+model[k])
		}
	}
	return out
}

// TestRangeOrderModel applies random puts (new keys and overwrites), deletes, Freezes,
// Releases, Captures and Loads to a Store whose order is kept, and checks after each
// that Range gives the model's keys in order, for several prefixes and with early stops:
// enough changes that the pending ones are merged into the base many times, and
// stretches with no Range, after which the order is dropped and built again.
func TestRangeOrderModel(t *testing.T) {
	prefixes := []string{"", "a", "a/1", "b/", "timer/", "zz"}
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 2))
			s := New()
			model := map[string]string{}
			var view *View
			for step := range 2000 {
				k := fmt.Sprintf("%s%d", []string{"a/", "a/1", "b/", "timer/", ""}[rng.IntN(5)], rng.IntN(300))
				switch r := rng.IntN(100); {
				case r < 50:
					v := fmt.Sprint(step)
					s.Put([]byte(k), []byte(v))
					model[k] = v
				case r < 85:
					s.Delete([]byte(k))
					delete(model, k)
				case r < 90:
					if view == nil {
						view = s.Freeze()
					} else {
						view.Release()
						view = nil
					}
				case r < 95:
					s.Capture()
				case r < 96:
					// A full base of the current state, loaded into a new Store.
					full := New()
					for k, v := range model {
						full.Put([]byte(k), []byte(v))
					}
					var fb bytes.Buffer
					if _, err := WriteSegment(&fb, Base, full.Capture()); err != nil {
						t.Fatal(err)
					}
					if view != nil {
						view.Release()
						view = nil
					}
					if err := s.Load(&fb); err != nil {
						t.Fatal(err)
					}
				default:
					// Range is checked below at every step.
				}
				if step%500 < 200 {
					continue // a stretch with no Range: the order goes stale and is dropped
				}
				p := prefixes[rng.IntN(len(prefixes))]
				limit := rng.IntN(4) * 3
				if got, w := ranged(s, p, limit), want(model, p, limit); !slices.Equal(got, w) {
					t.Fatalf("step %d: Range(%q) limit %d:\n got %v\nwant %v", step, p, limit, got, w)
				}
			}
			if got, w := ranged(s, "", 0), want(model, "", 0); !slices.Equal(got, w) {
				t.Fatalf("at the end: Range:\n got %v\nwant %v", got, w)
			}
		})
	}
}

// TestRangeEmptyKey checks that the empty key, which sorts first, is ranged over like any
// other, in the base and among the pending inserts.
func TestRangeEmptyKey(t *testing.T) {
	s := New()
	s.Put(nil, []byte("x"))
	s.Put([]byte("a"), []byte("y"))
	if got := ranged(s, "", 0); !slices.Equal(got, []string{"=x", "a=y"}) {
		t.Fatalf("Range: %v", got)
	}
	s.Delete(nil)
	if got := ranged(s, "", 0); !slices.Equal(got, []string{"a=y"}) {
		t.Fatalf("Range after deleting the empty key: %v", got)
	}
	s.Put(nil, []byte("z"))
	if got := ranged(s, "", 0); !slices.Equal(got, []string{"=z", "a=y"}) {
		t.Fatalf("Range after putting the empty key again: %v", got)
	}
}

// BenchmarkRangeTimers is what a session window or any timer index does per record: a
// Store of n keys of other state plus 1,000 timers (timer/<due time>/<key>) reads the
// timers in order up to the first one not due yet, fires (deletes) the one that is due,
// and sets a new timer later than all the others. "sort-every-call" is Range as it was
// (rangeBySort: the whole table scanned and the timers sorted per call); "kept-order" is
// Range now, after a first Range (which sorts) outside the timing.
func BenchmarkRangeTimers(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		for _, impl := range []struct {
			name string
			rng  func(s *Store, prefix []byte, fn func(key, value []byte) bool)
		}{
			{"sort-every-call", rangeBySort},
			{"kept-order", (*Store).Range},
		} {
			b.Run(fmt.Sprintf("keys=%d/%s", n, impl.name), func(b *testing.B) {
				s := New()
				for i := range n {
					s.Put(fmt.Appendf(nil, "count/%08d", i), []byte("12345678"))
				}
				const timers = 1000
				for i := range timers {
					s.Put(fmt.Appendf(nil, "timer/%016x/k%d", i, i), nil)
				}
				next := timers
				prefix := []byte("timer/")
				var fire []byte
				s.Capture()                                                  // the changes so far are not the benchmark's
				impl.rng(s, prefix, func(_, _ []byte) bool { return false }) // the first Range sorts: not timed
				b.ResetTimer()
				for b.Loop() {
					fire = fire[:0]
					impl.rng(s, prefix, func(k, _ []byte) bool {
						fire = append(fire, k...)
						return false // the first timer is due, the second is not
					})
					s.Delete(fire)
					s.Put(fmt.Appendf(nil, "timer/%016x/k%d", next, next), nil)
					next++
				}
			})
		}
	}
}

// BenchmarkPutNewKey measures a Put of a new key and the Delete of an old one (so the
// size stays n) in a Store of n keys, with and without a kept order (a Range of no key
// after each, which keeps the order in use).
func BenchmarkPutNewKey(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		for _, kept := range []bool{false, true} {
			b.Run(fmt.Sprintf("keys=%d/kept-order=%v", n, kept), func(b *testing.B) {
				s := New()
				for i := range n {
					s.Put(fmt.Appendf(nil, "k/%016x", uint64(i)*0x9e3779b97f4a7c15), []byte("v"))
				}
				s.Capture()
				if kept {
					s.Range(nil, func(_, _ []byte) bool { return false }) // the first Range sorts: not timed
				}
				i := 0
				b.ResetTimer()
				for b.Loop() {
					s.Delete(fmt.Appendf(nil, "k/%016x", uint64(i)*0x9e3779b97f4a7c15))
					s.Put(fmt.Appendf(nil, "k/%016x", uint64(i+n)*0x9e3779b97f4a7c15), []byte("v"))
					if kept {
						s.Range([]byte("z"), func(_, _ []byte) bool { return false })
					}
					i++
				}
			})
		}
	}
}
