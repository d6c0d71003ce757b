package state

import (
	"slices"
	"strings"
)

// Store is an in-memory map of byte keys to byte values that records which keys changed
// since its last Capture. The zero value is not usable; call New.
type Store struct {
	m map[string][]byte
	// dirty holds the keys put or deleted since the last Capture.
	dirty map[string]struct{}
	// size is the total length of the keys and values held.
	size int64
}

// New returns an empty Store.
func New() *Store {
	return &Store{m: make(map[string][]byte), dirty: make(map[string]struct{})}
}

// Get returns the value of key and whether it is present. The returned slice belongs to
// the Store: do not modify it (Put a new value instead).
func (s *Store) Get(key []byte) ([]byte, bool) {
	v, ok := s.m[string(key)]
	return v, ok
}

// Put sets key to a copy of value.
func (s *Store) Put(key, value []byte) {
	k := string(key)
	v := make([]byte, len(value))
	copy(v, value)
	if old, ok := s.m[k]; ok {
		s.size -= int64(len(k) + len(old))
	}
	s.m[k] = v
	s.size += int64(len(k) + len(v))
	s.dirty[k] = struct{}{}
}

// Delete removes key; deleting an absent key is a no-op.
func (s *Store) Delete(key []byte) {
	old, ok := s.m[string(key)]
	if !ok {
		return
	}
	k := string(key)
	s.size -= int64(len(k) + len(old))
	delete(s.m, k)
	s.dirty[k] = struct{}{}
}

// Len returns the number of keys.
func (s *Store) Len() int { return len(s.m) }

// Size returns the total length of the keys and values held.
func (s *Store) Size() int64 { return s.size }

// Range calls fn for every key that starts with prefix (every key for an empty prefix),
// in ascending byte order, until fn returns false. The slices belong to the Store: fn
// must not modify or keep them, and must not change the Store. It sorts the matching
// keys, so it costs O(n log n) in their number.
func (s *Store) Range(prefix []byte, fn func(key, value []byte) bool) {
	p := string(prefix)
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		if strings.HasPrefix(k, p) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !fn([]byte(k), s.m[k]) {
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
// starts recording anew. It costs O(changed keys) and copies no value.
func (s *Store) Capture() *Changes {
	c := &Changes{values: make(map[string][]byte, len(s.dirty))}
	for k := range s.dirty {
		v, ok := s.m[k]
		if !ok {
			v = nil
		}
		c.values[k] = v
		c.size += int64(len(k) + len(v))
	}
	clear(s.dirty)
	return c
}

// Dirty reports how many keys changed since the last Capture.
func (s *Store) Dirty() int { return len(s.dirty) }
