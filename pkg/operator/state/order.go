package state

import (
	"bytes"
	"math/bits"
	"slices"
	"sort"
	"strings"
)

// order is a Store's keys in ascending byte order, which the Store builds at its first
// Range and from then on keeps up to date: a sorted run of keys (the base, pointer-free:
// the keys' bytes end to end, where each ends, and a bit per key set once it is deleted)
// and the keys inserted since, sorted, none of them in the base. Only a new key and a
// deletion change it; a Put over an existing key does not. The pending changes are merged
// into a new base once they outnumber four times the square root of its length, so a
// change costs O(√n) amortized and a Range O(log n) plus the keys it visits (and the
// deleted ones it skips, 64 at a time).
type order struct {
	buf []byte
	// ends[i] is where key i of the base ends in buf; it starts at ends[i-1] (0 for i 0).
	ends []int
	// dead has bit i set when key i of the base was deleted; ndead counts them.
	dead  []uint64
	ndead int
	added []string
	// used is set by each and cleared by merge; stale is set instead of merging when no
	// Range ran since the last merge: the Store then lets the order go.
	used, stale bool
}

// newOrder returns the order of keys, which it sorts.
func newOrder(keys [][]byte) *order {
	slices.SortFunc(keys, bytes.Compare)
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	o := &order{buf: make([]byte, 0, size), ends: make([]int, 0, len(keys)), dead: make([]uint64, (len(keys)+63)/64)}
	for _, k := range keys {
		o.buf = append(o.buf, k...)
		o.ends = append(o.ends, len(o.buf))
	}
	return o
}

// start returns where key i of the base starts in buf.
func (o *order) start(i int) int {
	if i == 0 {
		return 0
	}
	return o.ends[i-1]
}

// key returns key i of the base.
func (o *order) key(i int) []byte { return o.buf[o.start(i):o.ends[i]:o.ends[i]] }

// search returns the index of the first key of the base not below k, and whether it is k.
func (o *order) search(k []byte) (int, bool) {
	i := sort.Search(len(o.ends), func(i int) bool { return bytes.Compare(o.key(i), k) >= 0 })
	return i, i < len(o.ends) && bytes.Equal(o.key(i), k)
}

func (o *order) isDead(i int) bool { return o.dead[i/64]&(1<<(i%64)) != 0 }

// live returns the index of the first key of the base at or after i that is not deleted,
// or len(o.ends).
func (o *order) live(i int) int {
	for i < len(o.ends) {
		w := o.dead[i/64] >> (i % 64)
		if w&1 == 0 {
			return i
		}
		// Skip the run of deleted keys from i: the trailing ones of w.
		i += bits.TrailingZeros64(^w)
	}
	return len(o.ends)
}

// searchAdded returns the index of the first added key not below k, and whether it is k.
func (o *order) searchAdded(k []byte) (int, bool) {
	return slices.BinarySearchFunc(o.added, k, func(a string, k []byte) int { return strings.Compare(a, string(k)) })
}

// insert records k as a new key of the Store.
func (o *order) insert(k []byte) {
	if i, ok := o.search(k); ok {
		o.dead[i/64] &^= 1 << (i % 64)
		o.ndead--
		return
	}
	i, _ := o.searchAdded(k)
	o.added = slices.Insert(o.added, i, string(k))
	o.pending()
}

// remove records that k, a key of the Store, was deleted.
func (o *order) remove(k []byte) {
	if i, ok := o.searchAdded(k); ok {
		o.added = slices.Delete(o.added, i, i+1)
		return
	}
	if i, ok := o.search(k); ok {
		o.dead[i/64] |= 1 << (i % 64)
		o.ndead++
		o.pending()
	}
}

// pending merges the pending changes into a new base when they outnumber 64 and four
// times the square root of its length, or marks the order stale when no Range ran since
// the last merge (a Store that ranges rarely pays for one merge's worth of changes after
// each Range, not for every change from then on).
func (o *order) pending() {
	if p := len(o.added) + o.ndead; p > 64 && p*p > 16*len(o.ends) {
		if !o.used {
			o.stale = true
			return
		}
		o.used = false
		o.merge()
	}
}

// merge makes a new base of the keys in order, with no pending change. It copies the
// base's keys between two changes at once.
func (o *order) merge() {
	n := len(o.ends)
	size := len(o.buf)
	for _, k := range o.added {
		size += len(k)
	}
	buf := make([]byte, 0, size)
	ends := make([]int, 0, n+len(o.added)-o.ndead)
	// base appends the live keys of the base from up to to.
	base := func(from, to int) {
		for from = o.live(from); from < to; from = o.live(from) {
			run := from + 1
			for run < to && !o.isDead(run) {
				run++
			}
			shift := len(buf) - o.start(from)
			buf = append(buf, o.buf[o.start(from):o.ends[run-1]]...)
			for _, e := range o.ends[from:run] {
				ends = append(ends, e+shift)
			}
			from = run
		}
	}
	from := 0
	for _, k := range o.added {
		to, _ := o.search(bytesOf(k))
		base(from, to)
		from = to
		buf = append(buf, k...)
		ends = append(ends, len(buf))
	}
	base(from, n)
	o.buf, o.ends, o.added = buf, ends, nil
	o.dead, o.ndead = make([]uint64, (len(ends)+63)/64), 0
}

// each calls fn for every key that starts with prefix, in ascending order, until fn
// returns false. fn must not change the order.
func (o *order) each(prefix []byte, fn func(k []byte) bool) {
	o.used = true
	i, _ := o.search(prefix)
	i = o.live(i)
	j, _ := o.searchAdded(prefix)
	for {
		var b, a []byte
		hasB := i < len(o.ends)
		if hasB {
			b = o.key(i)
			hasB = bytes.HasPrefix(b, prefix)
		}
		hasA := j < len(o.added) && strings.HasPrefix(o.added[j], string(prefix))
		if hasA {
			a = bytesOf(o.added[j])
		}
		switch {
		case !hasB && !hasA:
			return
		case hasB && (!hasA || bytes.Compare(b, a) < 0):
			i = o.live(i + 1)
			if !fn(b) {
				return
			}
		default:
			j++
			if !fn(a) {
				return
			}
		}
	}
}
