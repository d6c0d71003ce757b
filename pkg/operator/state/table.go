package state

import (
	"bytes"
	"hash/maphash"
)

// entries is a Store's content outside an overlay: an open-addressing hash table
// (linear probing, backward-shift deletion) whose slots point into an arena. A slot
// holds the top 64-addrBits bits of its key's hash above the entry's address, 0 when
// empty: a probe compares keys only when those bits agree, and the table grows
// without reading a key as long as it has at most 2^(64-addrBits) slots. The table and
// the arena hold no pointer per entry, so the garbage collector does not visit them.
type entries struct {
	slots []uint64
	// shift is 64 - log2(len(slots)): a key's home slot is its hash >> shift.
	shift uint
	n     int
	seed  maphash.Seed
	ar    *arena
	// sink keeps the loads of touch.
	sink uint64
}

// minSlots is the size of an empty table.
const minSlots = 8

func newEntries() *entries {
	return &entries{slots: make([]uint64, minSlots), shift: 64 - 3, seed: maphash.MakeSeed(), ar: newArena()}
}

func (e *entries) hash(key []byte) uint64 { return maphash.Bytes(e.seed, key) }

// slot is the slot of the entry at p whose key hashes to h.
func slot(h uint64, p addr) uint64 { return h>>addrBits<<addrBits | uint64(p) }

func slotAddr(s uint64) addr { return addr(s & addrMask) }

// home is the home slot of the entry in slot s.
func (e *entries) home(s uint64) uint64 {
	if e.shift >= addrBits {
		return s >> e.shift
	}
	return e.hash(e.key(slotAddr(s))) >> e.shift
}

func (e *entries) key(p addr) []byte {
	k, _, _ := e.ar.at(p)
	return k
}

// find returns the slot that holds key, or the empty slot where it would go.
func (e *entries) find(key []byte, h uint64) (int, bool) {
	mask := uint64(len(e.slots) - 1)
	tag := h >> addrBits
	for i := h >> e.shift; ; i = (i + 1) & mask {
		s := e.slots[i]
		if s == 0 {
			return int(i), false
		}
		if s>>addrBits == tag && bytes.Equal(e.key(slotAddr(s)), key) {
			return int(i), true
		}
	}
}

// get returns the value of key.
func (e *entries) get(key []byte) ([]byte, bool) {
	i, ok := e.find(key, e.hash(key))
	if !ok {
		return nil, false
	}
	_, v, _ := e.ar.at(slotAddr(e.slots[i]))
	return v, true
}

// set puts value under key, or deletes key when del is set, and returns the key as a
// string sharing the arena's bytes ("" when nothing was deleted) and the value it
// replaced, if any.
func (e *entries) set(key, value []byte, del bool) (k string, old []byte, had bool) {
	h := e.hash(key)
	i, had := e.find(key, h)
	if had {
		p := slotAddr(e.slots[i])
		_, old, _ = e.ar.at(p)
		if del {
			k = e.ar.keyString(p)
			e.remove(i)
		} else {
			np := e.ar.alloc(key, value)
			e.slots[i] = slot(h, np)
			k = e.ar.keyString(np)
		}
		e.ar.release(p)
	} else if !del {
		k = e.ar.keyString(e.insert(i, h, key, value))
	}
	if e.ar.fragmented() {
		e.compact()
	}
	return k, old, had
}

// touch reads the home slot of each of a batch of hashes, then the entry each of those
// slots points to when its hash bits agree, so that the cache misses of the batch's
// lookups overlap instead of following one another.
func (e *entries) touch(hs []uint64) {
	var sink uint64
	for _, h := range hs {
		sink += e.slots[h>>e.shift]
	}
	for _, h := range hs {
		if s := e.slots[h>>e.shift]; s != 0 && s>>addrBits == h>>addrBits {
			p := slotAddr(s)
			sink += uint64(e.ar.slabs[p>>offsetBits][int(p&(1<<offsetBits-1))<<unitShift])
		}
	}
	e.sink += sink
}

// insert stores key with value in the empty slot i, which find returned for key.
func (e *entries) insert(i int, h uint64, key, value []byte) addr {
	p := e.ar.alloc(key, value)
	e.slots[i] = slot(h, p)
	e.n++
	if 4*e.n > 3*len(e.slots) {
		e.grow()
	}
	return p
}

// remove empties slot i and moves the entries after it that may move back, so that no
// probe sequence has a hole.
func (e *entries) remove(i int) {
	mask := len(e.slots) - 1
	for j := (i + 1) & mask; e.slots[j] != 0; j = (j + 1) & mask {
		k := int(e.home(e.slots[j]))
		// The entry at j stays when its home lies cyclically in (i, j].
		if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue
		}
		e.slots[i] = e.slots[j]
		i = j
	}
	e.slots[i] = 0
	e.n--
}

// grow doubles the table.
func (e *entries) grow() {
	old := e.slots
	e.slots = make([]uint64, 2*len(old))
	e.shift--
	mask := uint64(len(e.slots) - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := e.home(s)
		for e.slots[i] != 0 {
			i = (i + 1) & mask
		}
		e.slots[i] = s
	}
}

// compact moves the live entries out of the arena's slab with the most garbage and
// drops it.
func (e *entries) compact() {
	i := e.ar.dirtiest()
	if i == 0 {
		return
	}
	e.ar.each(i, func(p addr, key, value []byte) {
		h := e.hash(key)
		if j, ok := e.find(key, h); ok && slotAddr(e.slots[j]) == p {
			e.slots[j] = slot(h, e.ar.alloc(key, value))
		}
	})
	e.ar.drop(i)
}

// each calls fn for every entry, in table order, until fn returns false.
func (e *entries) each(fn func(key, value []byte) bool) {
	for _, s := range e.slots {
		if s == 0 {
			continue
		}
		k, v, _ := e.ar.at(slotAddr(s))
		if !fn(k, v) {
			return
		}
	}
}
