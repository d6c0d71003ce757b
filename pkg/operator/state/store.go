package state

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"io"
	"slices"
	"sync/atomic"
	"unsafe"
)

// Store is an in-memory map of byte keys to byte values that records which keys changed
// since its last Capture. The zero value is not usable; call New.
//
// Entries live in 1 MiB slabs of plain bytes indexed by an open-addressing hash table of
// 8-byte slots, so the garbage collector does not visit them one by one; a key and its
// value cost their bytes plus 10 to 25 bytes (header, padding, slot). The bytes an
// overwritten or deleted entry leaves in its slab are reclaimed once they exceed a
// third of the live bytes: the slab with the most garbage has its live entries moved
// and is dropped, one slab per change.
//
// While a View of it exists (Freeze), the table and slabs the View reads are left
// untouched: changes go to an overlay that is folded back, in O(overlay), at the first
// Capture or Freeze after the View is released.
type Store struct {
	e *entries
	// over holds the changes made while view is open; a nil value marks a deletion.
	over map[string][]byte
	view *View
	// dirty holds the keys put or deleted since the last Capture.
	dirty map[string]struct{}
	// n and size are the number of keys and the total length of the keys and values.
	n    int
	size int64
	// ord is the keys in order, built by the first Range and then kept; nil before.
	ord *order
}

// New returns an empty Store.
func New() *Store {
	return &Store{e: newEntries(), dirty: make(map[string]struct{})}
}

// Get returns the value of key and whether it is present. The returned slice belongs to
// the Store: do not modify it (Put a new value instead).
func (s *Store) Get(key []byte) ([]byte, bool) {
	if s.over != nil {
		if v, ok := s.over[string(key)]; ok {
			return v, v != nil
		}
	}
	return s.e.get(key)
}

// set puts value under key, or deletes key when del is set, keeping the counts.
func (s *Store) set(key, value []byte, del bool) {
	if s.over == nil {
		k, old, had := s.e.set(key, value, del)
		s.count(old, had, key, value, del)
		s.reorder(key, had, del)
		if had || !del {
			s.dirty[k] = struct{}{}
		}
		return
	}
	old, had := s.Get(key)
	if !had && del {
		return
	}
	s.count(old, had, key, value, del)
	s.reorder(key, had, del)
	var k string
	var v []byte
	if del {
		k = string(key)
	} else {
		k, v = entry(key, value)
	}
	// Deleted and inserted again, so that the map lets go of the allocation of the old
	// key.
	delete(s.over, k)
	s.over[k] = v
	s.dirty[k] = struct{}{}
}

// reorder keeps the order of keys, once built, for a change of key that had a value or
// not: only a new key and a deletion change it.
func (s *Store) reorder(key []byte, had, del bool) {
	switch {
	case s.ord == nil:
	case del && had:
		s.ord.remove(key)
	case !del && !had:
		s.ord.insert(key)
	}
	if s.ord != nil && s.ord.stale {
		s.ord = nil
	}
}

// count updates the number of keys and the size for a change of key from old (if it
// had a value) to value (or its deletion).
func (s *Store) count(old []byte, had bool, key, value []byte, del bool) {
	if had {
		s.n--
		s.size -= int64(len(key) + len(old))
	}
	if !del {
		s.n++
		s.size += int64(len(key) + len(value))
	}
}

// Put sets key to a copy of value.
func (s *Store) Put(key, value []byte) { s.set(key, value, false) }

// entry copies key and value into one allocation, which the overlay's key and value
// then share.
func entry(key, value []byte) (string, []byte) {
	kv := make([]byte, len(key)+len(value))
	copy(kv, key)
	copy(kv[len(key):], value)
	var k string
	if len(key) > 0 {
		// kv is never written again, so the string stays immutable.
		k = unsafe.String(&kv[0], len(key))
	}
	return k, kv[len(key):len(kv):len(kv)]
}

// bytesOf returns the bytes of k without a copy; they must not be modified.
func bytesOf(k string) []byte { return unsafe.Slice(unsafe.StringData(k), len(k)) }

// Delete removes key; deleting an absent key is a no-op.
func (s *Store) Delete(key []byte) { s.set(key, nil, true) }

// Len returns the number of keys.
func (s *Store) Len() int { return s.n }

// Size returns the total length of the keys and values held.
func (s *Store) Size() int64 { return s.size }

// Range calls fn for every key that starts with prefix (every key for an empty prefix),
// in ascending byte order, until fn returns false. The slices belong to the Store: fn
// must not modify or keep them, and must not change the Store.
//
// The first Range sorts the keys, in O(n log n), and the Store keeps that order from then
// on: a new key or a deletion costs O(√n) amortized more (a Put over an existing key
// nothing), and each Range costs O(log n) plus the keys it visits, however large the
// rest of the Store. Stopping early (a timer index read up to the first key still due
// later) therefore reads only what it visits. The kept order holds a copy of every key
// (its bytes plus 8 per key); a Store that stops ranging lets it go after about 4√n new
// or deleted keys, and the next Range sorts again.
func (s *Store) Range(prefix []byte, fn func(key, value []byte) bool) {
	if s.ord == nil {
		s.ord = newOrder(s.keys())
	}
	s.ord.each(prefix, func(k []byte) bool {
		v, _ := s.Get(k)
		return fn(k, v)
	})
}

// keys returns every key of the Store, in no order; the slices belong to the Store.
func (s *Store) keys() [][]byte {
	keys := make([][]byte, 0, s.n)
	s.e.each(func(k, _ []byte) bool {
		if _, shadowed := s.over[string(k)]; !shadowed {
			keys = append(keys, k)
		}
		return true
	})
	for k, v := range s.over {
		if v != nil {
			keys = append(keys, bytesOf(k))
		}
	}
	return keys
}

// Changes are the puts and deletes captured from a Store: for each key changed, its
// value at the capture, or its deletion. They are immutable and may be read from any
// goroutine.
type Changes struct {
	// values holds the changed keys; a nil value marks a deletion (a put value is never
	// nil).
	values map[string][]byte
	size   int64
}

// Len returns the number of keys changed.
func (c *Changes) Len() int { return len(c.values) }

// Size returns the total length of the changed keys and their values.
func (c *Changes) Size() int64 { return c.size }

// Capture returns the changes since the previous Capture (or since New or Load) and
// starts recording anew. It costs O(changed keys) and copies no value (plus, once, the
// fold of a released View's overlay).
func (s *Store) Capture() *Changes {
	s.thaw()
	c := &Changes{values: make(map[string][]byte, len(s.dirty))}
	for k := range s.dirty {
		v, _ := s.Get(bytesOf(k))
		c.values[k] = v
		c.size += int64(len(k) + len(v))
	}
	// A new set rather than clear: a map keeps the room it once grew to.
	s.dirty = make(map[string]struct{})
	return c
}

// View is a read-only view of a Store's content at the time of Freeze, which another
// goroutine may read while the Store goes on changing.
type View struct {
	e        *entries
	released atomic.Bool
}

// Freeze returns a View of the Store's current content, in O(1); nil while an earlier
// View is not released yet and folded back. Release the View when done with it.
func (s *Store) Freeze() *View {
	s.thaw()
	if s.view != nil {
		return nil
	}
	s.view = &View{e: s.e}
	s.over = make(map[string][]byte)
	return s.view
}

// Frozen reports whether a View is open or not folded back yet.
func (s *Store) Frozen() bool { return s.view != nil }

// thaw folds the overlay back once the View is released.
func (s *Store) thaw() {
	if s.view == nil || !s.view.released.Load() {
		return
	}
	over := s.over
	s.over, s.view = nil, nil
	for k, v := range over {
		s.e.set(bytesOf(k), v, v == nil)
	}
}

// Release tells the Store that the View is no longer read. It may be called from any
// goroutine, more than once.
func (v *View) Release() { v.released.Store(true) }

// sortKey orders entries by key: the first 16 bytes of the key, zero-padded, as two
// big-endian integers, then (on a tie) the whole key, so that most comparisons of a
// sort read no key.
type sortKey struct {
	hi, lo uint64
	p      addr
}

func newSortKey(k []byte, p addr) sortKey {
	var b [16]byte
	copy(b[:], k)
	return sortKey{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]), p: p}
}

// WriteBase writes the View's content as one Base segment to w, keys sorted, and returns
// the number of records written. It must not be called after Release.
func (v *View) WriteBase(w io.Writer) (int, error) {
	ar := v.e.ar
	order := make([]sortKey, 0, v.e.n)
	for _, sl := range v.e.slots {
		if sl != 0 {
			p := slotAddr(sl)
			k, _, _ := ar.at(p)
			order = append(order, newSortKey(k, p))
		}
	}
	slices.SortFunc(order, func(a, b sortKey) int {
		if c := cmp.Compare(a.hi, b.hi); c != 0 {
			return c
		}
		if c := cmp.Compare(a.lo, b.lo); c != 0 {
			return c
		}
		ka, _, _ := ar.at(a.p)
		kb, _, _ := ar.at(b.p)
		return bytes.Compare(ka, kb)
	})
	sw := newSegmentWriter(w, Base)
	for _, o := range order {
		k, val, _ := ar.at(o.p)
		if err := sw.write(Record{Key: k, Value: val}); err != nil {
			return 0, err
		}
	}
	return sw.count, sw.close()
}
