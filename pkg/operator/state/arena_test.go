package state

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// check compares the Store with model and checks the arena's accounting: the live bytes
// are those of the entries the table points to, every byte of a held slab is live or
// garbage, and garbage stays bounded.
func check(t *testing.T, s *Store, model map[string]string, when string) {
	t.Helper()
	got := map[string]string{}
	s.Range(nil, func(k, v []byte) bool {
		got[string(k)] = string(v)
		return true
	})
	if !maps.Equal(got, model) {
		t.Fatalf("%s: store holds %d keys, model %d (or other values)", when, len(got), len(model))
	}
	for k, v := range model {
		if g, ok := s.Get([]byte(k)); !ok || string(g) != v {
			t.Fatalf("%s: Get(%q) = %d bytes, %t; want %d bytes", when, k, len(g), ok, len(v))
		}
	}
	if s.Frozen() {
		return
	}
	ar := s.e.ar
	var live, held int64
	s.e.each(func(k, v []byte) bool {
		live += int64(entrySize(len(k), len(v)))
		return true
	})
	for _, sl := range ar.slabs {
		held += int64(len(sl))
	}
	if live != ar.liveAll || held != ar.liveAll+ar.garbage {
		t.Fatalf("%s: arena counts %d live + %d garbage, the entries take %d of %d held", when, ar.liveAll, ar.garbage, live, held)
	}
	if ar.garbage > ar.liveAll/2+2*slabSize {
		t.Fatalf("%s: %d bytes of garbage for %d live", when, ar.garbage, ar.liveAll)
	}
}

// TestCompactionModel overwrites and deletes values large enough to fill slabs with
// garbage, some large enough for slabs of their own, with frozen Views written as bases
// in between: the Store stays the model's map, every slab byte is accounted for, and
// compaction keeps the garbage bounded.
func TestCompactionModel(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			s := New()
			model := map[string]string{}
			value := func() string {
				n := rng.IntN(8 << 10)
				if rng.IntN(200) == 0 {
					n = ownSlab + rng.IntN(ownSlab)
				}
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				return string(b)
			}
			var view *View
			var atFreeze map[string]string
			for step := range 6000 {
				k := fmt.Sprintf("key-%04d", rng.IntN(800))
				if rng.IntN(5) == 0 {
					s.Delete([]byte(k))
					delete(model, k)
				} else {
					v := value()
					s.Put([]byte(k), []byte(v))
					model[k] = v
				}
				switch {
				case step%500 == 250 && view == nil:
					view, atFreeze = s.Freeze(), maps.Clone(model)
				case step%500 == 400 && view != nil:
					var base bytes.Buffer
					if _, err := view.WriteBase(&base); err != nil {
						t.Fatal(err)
					}
					view.Release()
					view = nil
					frozen := New()
					if err := frozen.Load(&base); err != nil {
						t.Fatal(err)
					}
					check(t, frozen, atFreeze, fmt.Sprintf("step %d, base of the View", step))
					s.Capture()
				}
				if step%100 == 0 {
					check(t, s, model, fmt.Sprintf("step %d", step))
				}
			}
			s.Capture()
			check(t, s, model, "end")
		})
	}
}

// TestHomeAgreesWithHash checks that a slot's home, taken from the hash bits in the slot
// while the table is small enough and from the key's hash beyond, is the key's hash
// shifted for every table size.
func TestHomeAgreesWithHash(t *testing.T) {
	e := newEntries()
	for i := range 100 {
		e.set([]byte(fmt.Sprint("k", i)), []byte("v"), false)
	}
	slots := e.slots
	for shift := uint(63); shift > 0; shift-- {
		e.shift = shift
		for _, s := range slots {
			if s == 0 {
				continue
			}
			if got, want := e.home(s), e.hash(e.key(slotAddr(s)))>>shift; got != want {
				t.Fatalf("shift %d: home %d, hash gives %d", shift, got, want)
			}
		}
	}
}
