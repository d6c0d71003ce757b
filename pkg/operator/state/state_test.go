package state_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// contents returns the Store's keys and values as a plain map.
func contents(s *state.Store) map[string]string {
	m := map[string]string{}
	s.Range(nil, func(k, v []byte) bool {
		m[string(k)] = string(v)
		return true
	})
	return m
}

// TestSegmentsModel applies random puts and deletes to a Store and a plain map, captures
// deltas at random points, and checks that Load of the base and the deltas, and Merge of
// them into a new base, give the map's content every time.
func TestSegmentsModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			s := state.New()
			model := map[string]string{}
			base := segment(t, state.Base, state.New().Capture())
			var deltas [][]byte
			for step := range 400 {
				k := fmt.Sprintf("k%03d", rng.IntN(60))
				switch r := rng.IntN(10); {
				case r < 6:
					v := fmt.Sprintf("v%d-%d", step, rng.IntN(1000))
					if rng.IntN(20) == 0 {
						v = ""
					}
					s.Put([]byte(k), []byte(v))
					model[k] = v
				case r < 8:
					s.Delete([]byte(k))
					delete(model, k)
				default:
					deltas = append(deltas, segment(t, state.Delta, s.Capture()))
					restored := state.New()
					if err := restored.Load(readers(base, deltas)...); err != nil {
						t.Fatalf("step %d: load: %v", step, err)
					}
					if got := contents(restored); !maps.Equal(got, model) {
						t.Fatalf("step %d: loaded %v, want %v", step, got, model)
					}
					if rng.IntN(3) == 0 {
						var nb bytes.Buffer
						rs := readers(base, deltas)
						if _, err := state.Merge(&nb, rs[0], rs[1:]...); err != nil {
							t.Fatalf("step %d: merge: %v", step, err)
						}
						base, deltas = nb.Bytes(), nil
						restored := state.New()
						if err := restored.Load(bytes.NewReader(base)); err != nil {
							t.Fatal(err)
						}
						if got := contents(restored); !maps.Equal(got, model) {
							t.Fatalf("step %d: merged %v, want %v", step, got, model)
						}
						if restored.Size() != s.Size() {
							t.Fatalf("step %d: size %d after load, %d in the store", step, restored.Size(), s.Size())
						}
					}
				}
			}
		})
	}
}

func readers(base []byte, deltas [][]byte) []io.Reader {
	rs := []io.Reader{bytes.NewReader(base)}
	for _, d := range deltas {
		rs = append(rs, bytes.NewReader(d))
	}
	return rs
}

func segment(t testing.TB, kind state.Kind, cs ...*state.Changes) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := state.WriteSegment(&buf, kind, cs...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSegmentCorruption flips every byte of a segment in turn (and truncates it): each
// must fail to load and leave the Store as it was.
func TestSegmentCorruption(t *testing.T) {
	src := state.New()
	src.Put([]byte("a"), []byte("1"))
	src.Put([]byte("b"), []byte("22"))
	src.Delete([]byte("a"))
	src.Put([]byte("c"), nil)
	seg := segment(t, state.Delta, src.Capture())
	base := segment(t, state.Base, state.New().Capture())
	s := state.New()
	s.Put([]byte("keep"), []byte("me"))
	for i := range seg {
		bad := bytes.Clone(seg)
		bad[i] ^= 0x41
		err := s.Load(bytes.NewReader(base), bytes.NewReader(bad))
		if !errors.Is(err, state.ErrCorruptSegment) {
			t.Fatalf("byte %d flipped: load returned %v, want ErrCorruptSegment", i, err)
		}
	}
	for n := range len(seg) {
		if err := s.Load(bytes.NewReader(base), bytes.NewReader(seg[:n])); !errors.Is(err, state.ErrCorruptSegment) {
			t.Fatalf("truncated to %d bytes: load returned %v", n, err)
		}
	}
	if got := contents(s); !maps.Equal(got, map[string]string{"keep": "me"}) {
		t.Fatalf("store changed by failed loads: %v", got)
	}
	if err := s.Load(bytes.NewReader(base), bytes.NewReader(seg)); err != nil {
		t.Fatal(err)
	}
	if got := contents(s); !maps.Equal(got, map[string]string{"b": "22", "c": ""}) {
		t.Fatalf("loaded %v", got)
	}
}

func TestMap(t *testing.T) {
	s := state.New()
	counts := state.NewMap(s, "c/", state.Int64)
	names := state.NewMap(s, "n/", state.JSON[[]string]())
	if err := counts.Put("x", -5); err != nil {
		t.Fatal(err)
	}
	if err := names.Put("x", []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := counts.Get("x"); err != nil || !ok || v != -5 {
		t.Fatalf("counts.Get = %d, %t, %v", v, ok, err)
	}
	var keys []string
	if err := names.Range(func(k string, v []string) bool { keys = append(keys, k+"="+fmt.Sprint(v)); return true }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[x=[a b]]" {
		t.Fatalf("names.Range gave %v", keys)
	}
	counts.Delete("x")
	if _, ok, _ := counts.Get("x"); ok {
		t.Fatal("deleted key still present")
	}
	s.Put([]byte("c/y"), []byte("short"))
	if _, _, err := counts.Get("y"); err == nil {
		t.Fatal("a value of the wrong length decoded")
	}
}

// TestFreezeRaces writes a frozen View as a base on another goroutine while the Store
// keeps changing and capturing (run with -race): the base holds the content at Freeze,
// the Store and its deltas stay those of the plain map, and a base plus the deltas
// captured after the Freeze load the map's content.
func TestFreezeRaces(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	s := state.New()
	model := map[string]string{}
	step := func(i int) {
		k := fmt.Sprintf("k%03d", rng.IntN(200))
		if rng.IntN(4) == 0 {
			s.Delete([]byte(k))
			delete(model, k)
			return
		}
		v := fmt.Sprintf("v%d", i)
		s.Put([]byte(k), []byte(v))
		model[k] = v
	}
	for i := range 500 {
		step(i)
	}
	s.Capture()
	for round := range 5 {
		view := s.Freeze()
		if view == nil {
			t.Fatalf("round %d: Freeze returned nil with no View open", round)
		}
		if s.Freeze() != nil {
			t.Fatalf("round %d: a second View while the first is open", round)
		}
		atFreeze := maps.Clone(model)
		type result struct {
			base []byte
			err  error
		}
		done := make(chan result, 1)
		go func() {
			var buf bytes.Buffer
			_, err := view.WriteBase(&buf)
			view.Release()
			done <- result{buf.Bytes(), err}
		}()
		var deltas [][]byte
		for i := range 300 {
			step(1000*round + i)
			if i%100 == 99 {
				deltas = append(deltas, segment(t, state.Delta, s.Capture()))
			}
		}
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		frozen := state.New()
		if err := frozen.Load(bytes.NewReader(res.base)); err != nil {
			t.Fatal(err)
		}
		if got := contents(frozen); !maps.Equal(got, atFreeze) {
			t.Fatalf("round %d: base %v, want the content at Freeze %v", round, got, atFreeze)
		}
		if got := contents(s); !maps.Equal(got, model) {
			t.Fatalf("round %d: store %v, want %v", round, got, model)
		}
		deltas = append(deltas, segment(t, state.Delta, s.Capture())) // folds the overlay
		restored := state.New()
		if err := restored.Load(readers(res.base, deltas)...); err != nil {
			t.Fatal(err)
		}
		if got := contents(restored); !maps.Equal(got, model) || restored.Len() != s.Len() || restored.Size() != s.Size() {
			t.Fatalf("round %d: base and deltas load %v (len %d size %d), want %v (len %d size %d)", round, got, restored.Len(), restored.Size(), model, s.Len(), s.Size())
		}
		if s.Frozen() {
			t.Fatalf("round %d: overlay not folded after the View was released", round)
		}
	}
}

// FuzzLoad feeds arbitrary bytes to Load as a delta after a valid base, and to Merge: no
// input makes them panic, and an input that Load refuses leaves the Store unchanged.
func FuzzLoad(f *testing.F) {
	src := state.New()
	src.Put([]byte("a"), []byte("1"))
	src.Put([]byte("b"), bytes.Repeat([]byte("x"), 300))
	base := segment(f, state.Base, src.Capture())
	src.Delete([]byte("a"))
	src.Put([]byte("c"), nil)
	f.Add(segment(f, state.Delta, src.Capture()))
	f.Add(base)
	f.Add([]byte("CAIRNSEG\x01\x02\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, seg []byte) {
		s := state.New()
		s.Put([]byte("keep"), []byte("me"))
		if err := s.Load(bytes.NewReader(base), bytes.NewReader(seg)); err != nil {
			if got := contents(s); !maps.Equal(got, map[string]string{"keep": "me"}) {
				t.Fatalf("a refused load changed the store: %v", got)
			}
		}
		_, _ = state.Merge(io.Discard, bytes.NewReader(base), bytes.NewReader(seg))
	})
}
