package state

import (
	"encoding/binary"
	"unsafe"
)

// The arena holds the Store's entries in slabs of slabSize bytes, which hold no pointer:
// the garbage collector neither scans nor tracks the entries one by one, and an entry
// costs its bytes, a small header and at most 7 bytes of padding. Slab bytes, once
// written, are never written again: a value handed out by Get or held by Changes stays
// valid (the garbage collector keeps a dropped slab alive while such a slice points
// into it).
const (
	// slabShift is log2 of the slab size (1 MiB).
	slabShift = 20
	slabSize  = 1 << slabShift
	// unitShift is log2 of the alignment of entries (8 bytes); addresses count units.
	unitShift = 3
	// offsetBits is the number of address bits that give the unit within a slab.
	offsetBits = slabShift - unitShift
	// ownSlab is the size from which an entry gets a slab of its own.
	ownSlab = slabSize / 4
	// addrBits is the width of an address in a table slot.
	addrBits = 40
	addrMask = 1<<addrBits - 1
)

// An addr names an entry: its slab's index above offsetBits, its offset in the slab (in
// units) below. Slab 0 is never used, so no entry has address 0.
type addr uint64

// arena allocates entries in slabs, counts the bytes of entries that were freed in each
// slab (garbage), drops a slab once it holds no live entry, and lets the Store move the
// live entries out of a slab that holds much garbage.
type arena struct {
	slabs [][]byte
	// live is the bytes of live entries in each slab, padding included.
	live []int64
	// free holds the indexes of dropped slabs, for reuse.
	free []int
	// cur is the index of the slab entries are appended to; 0: none yet.
	cur int
	// liveAll and garbage are the live and freed bytes of the slabs held.
	liveAll, garbage int64
}

func newArena() *arena {
	return &arena{slabs: make([][]byte, 1), live: make([]int64, 1)}
}

// entrySize is the padded size of an entry: the key's and the value's length as
// uvarints, then the key and the value.
func entrySize(klen, vlen int) int {
	n := uvarintLen(uint64(klen)) + uvarintLen(uint64(vlen)) + klen + vlen
	return (n + 1<<unitShift - 1) &^ (1<<unitShift - 1)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// newSlab returns the index of a new slab of capacity c.
func (a *arena) newSlab(c int) int {
	s := make([]byte, 0, c)
	if n := len(a.free); n > 0 {
		i := a.free[n-1]
		a.free = a.free[:n-1]
		a.slabs[i], a.live[i] = s, 0
		return i
	}
	a.slabs = append(a.slabs, s)
	a.live = append(a.live, 0)
	return len(a.slabs) - 1
}

// alloc stores key and value as a new entry and returns its address.
func (a *arena) alloc(key, value []byte) addr {
	size := entrySize(len(key), len(value))
	i := a.cur
	switch {
	case size >= ownSlab:
		i = a.newSlab(size)
	case i == 0 || len(a.slabs[i])+size > cap(a.slabs[i]):
		old := a.cur
		a.cur = a.newSlab(slabSize)
		i = a.cur
		if old != 0 && a.live[old] == 0 {
			a.drop(old)
		}
	}
	s := a.slabs[i]
	off := len(s)
	s = binary.AppendUvarint(s, uint64(len(key)))
	s = binary.AppendUvarint(s, uint64(len(value)))
	s = append(s, key...)
	s = append(s, value...)
	a.slabs[i] = s[:off+size]
	a.live[i] += int64(size)
	a.liveAll += int64(size)
	return addr(i)<<offsetBits | addr(off>>unitShift)
}

// at returns the entry at p: its key and value (a non-nil, possibly empty slice, capped
// at its length), and its padded size.
func (a *arena) at(p addr) (key, value []byte, size int) {
	s := a.slabs[p>>offsetBits]
	off := int(p&(1<<offsetBits-1)) << unitShift
	return entryAt(s, off)
}

// entryAt decodes the entry at off in slab s.
func entryAt(s []byte, off int) (key, value []byte, size int) {
	klen, n1 := binary.Uvarint(s[off:])
	vlen, n2 := binary.Uvarint(s[off+n1:])
	k := off + n1 + n2
	v := k + int(klen)
	end := v + int(vlen)
	return s[k:v:v], s[v:end:end], entrySize(int(klen), int(vlen))
}

// keyString returns the key of the entry at p as a string that shares the slab's bytes.
func (a *arena) keyString(p addr) string {
	k, _, _ := a.at(p)
	if len(k) == 0 {
		return ""
	}
	return unsafe.String(&k[0], len(k))
}

// release counts the entry at p as garbage, and drops its slab once nothing in it lives
// and nothing is appended to it any more.
func (a *arena) release(p addr) {
	_, _, size := a.at(p)
	i := int(p >> offsetBits)
	a.live[i] -= int64(size)
	a.liveAll -= int64(size)
	a.garbage += int64(size)
	if a.live[i] == 0 && i != a.cur {
		a.drop(i)
	}
}

// drop lets go of slab i, whose entries are all garbage or moved.
func (a *arena) drop(i int) {
	a.garbage -= int64(len(a.slabs[i])) - a.live[i]
	a.liveAll -= a.live[i]
	a.slabs[i], a.live[i] = nil, 0
	a.free = append(a.free, i)
}

// fragmented reports whether the garbage is worth a compaction: more than a third of
// the live bytes, and more than a slab.
func (a *arena) fragmented() bool {
	return a.garbage > slabSize && 3*a.garbage > a.liveAll
}

// dirtiest returns the slab, other than the current one, with the most garbage; 0 when
// none holds an eighth of a slab of it (moving its entries would free too little).
func (a *arena) dirtiest() int {
	best, most := 0, int64(slabSize/8-1)
	for i, s := range a.slabs {
		if i == a.cur || s == nil {
			continue
		}
		if g := int64(len(s)) - a.live[i]; g > most {
			best, most = i, g
		}
	}
	return best
}

// each calls fn for every entry written in slab i, live or not, in order.
func (a *arena) each(i int, fn func(p addr, key, value []byte)) {
	s := a.slabs[i]
	for off := 0; off < len(s); {
		k, v, size := entryAt(s, off)
		fn(addr(i)<<offsetBits|addr(off>>unitShift), k, v)
		off += size
	}
}
