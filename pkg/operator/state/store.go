package state

import (
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Store is an in-memory map of byte keys to byte values that records which keys changed
// since its last Capture. The zero value is not usable; call New.
//
// While a View of it exists (Freeze), the map the View reads is left untouched: changes
// go to an overlay that is folded back into the map, in O(overlay), at the first Capture
// or Freeze after the View is released.
type Store struct {
	m map[string][]byte
	// over holds the changes made while view is open; a nil value marks a deletion.
	over map[string][]byte
	view *View
	// dirty holds the keys put or deleted since the last Capture.
	dirty map[string]struct{}
	// n and size are the number of keys and the total length of the keys and values.
	n    int
	size int64
}

// New returns an empty Store.
func New() *Store {
	return &Store{m: make(map[string][]byte), dirty: make(map[string]struct{})}
}

// Get returns the value of key and whether it is present. The returned slice belongs to
// the Store: do not modify it (Put a new value instead).
func (s *Store) Get(key []byte) ([]byte, bool) {
	if s.over != nil {
		if v, ok := s.over[string(key)]; ok {
			return v, v != nil
		}
	}
	v, ok := s.m[string(key)]
	return v, ok
}

// set stores v (nil: deletes) under k, keeping the counts. A key that is overwritten is
// deleted and inserted again, so that the map lets go of the allocation of the old key.
func (s *Store) set(k string, v []byte) {
	old, had := s.Get(unsafe.Slice(unsafe.StringData(k), len(k)))
	if !had && v == nil {
		return
	}
	if had {
		s.n--
		s.size -= int64(len(k) + len(old))
	}
	if v != nil {
		s.n++
		s.size += int64(len(k) + len(v))
	}
	s.dirty[k] = struct{}{}
	switch {
	case s.over != nil:
		delete(s.over, k)
		s.over[k] = v
	case v == nil:
		delete(s.m, k)
	default:
		delete(s.m, k)
		s.m[k] = v
	}
}

// Put sets key to a copy of value.
func (s *Store) Put(key, value []byte) { s.set(entry(key, value)) }

// entry copies key and value into one allocation, which the map's key and value then
// share: an entry costs its bytes plus the map's slot.
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

// Delete removes key; deleting an absent key is a no-op.
func (s *Store) Delete(key []byte) {
	if _, ok := s.Get(key); ok {
		s.set(string(key), nil)
	}
}

// Len returns the number of keys.
func (s *Store) Len() int { return s.n }

// Size returns the total length of the keys and values held.
func (s *Store) Size() int64 { return s.size }

// Range calls fn for every key that starts with prefix (every key for an empty prefix),
// in ascending byte order, until fn returns false. The slices belong to the Store: fn
// must not modify or keep them, and must not change the Store. It sorts the matching
// keys, so it costs O(n log n) in their number.
func (s *Store) Range(prefix []byte, fn func(key, value []byte) bool) {
	p := string(prefix)
	keys := make([]string, 0, s.n)
	for k := range s.m {
		if _, shadowed := s.over[k]; !shadowed && strings.HasPrefix(k, p) {
			keys = append(keys, k)
		}
	}
	for k, v := range s.over {
		if v != nil && strings.HasPrefix(k, p) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, _ := s.Get([]byte(k))
		if !fn([]byte(k), v) {
			return
		}
	}
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
		v, _ := s.Get([]byte(k))
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
	m        map[string][]byte
	released atomic.Bool
}

// Freeze returns a View of the Store's current content, in O(1); nil while an earlier
// View is not released yet and folded back. Release the View when done with it.
func (s *Store) Freeze() *View {
	s.thaw()
	if s.view != nil {
		return nil
	}
	s.view = &View{m: s.m}
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
	for k, v := range s.over {
		if v == nil {
			delete(s.m, k)
		} else {
			s.m[k] = v
		}
	}
	s.over, s.view = nil, nil
}

// Release tells the Store that the View is no longer read. It may be called from any
// goroutine, more than once.
func (v *View) Release() { v.released.Store(true) }

// WriteBase writes the View's content as one Base segment to w, keys sorted, and returns
// the number of records written. It must not be called after Release.
func (v *View) WriteBase(w io.Writer) (int, error) {
	sw, err := newSegmentWriter(w, Base)
	if err != nil {
		return 0, err
	}
	for _, k := range slices.Sorted(maps.Keys(v.m)) {
		if err := sw.write(Record{Key: []byte(k), Value: v.m[k]}); err != nil {
			return 0, err
		}
	}
	return sw.count, sw.close()
}
