package state

import (
	"bytes"
	"fmt"
	"io"
)

// Load replaces the Store's content with the state that segs describe: a Base segment
// (or none, for an empty start) followed by Delta segments, applied in order. Every
// segment is read to its end and checked; on error the Store is left unchanged. The
// loaded state counts as captured: the next Capture holds only later changes.
//
// Load reads the segments newest first, the base last, and keeps the first record it
// meets for each key (a deletion as a tombstone until the end): every key is stored
// once, and an overwritten value costs a lookup instead of a copy. A caller that
// downloads the segments should fetch them in that order.
func (s *Store) Load(segs ...io.Reader) error {
	e := newEntries()
	var size int64
	var tombs map[string]struct{}
	// Records are looked up a batch at a time (see entries.touch).
	var batch [64]Record
	var hs [64]uint64
	for i := len(segs) - 1; i >= 0; i-- {
		sr, err := NewSegmentReader(segs[i])
		if err != nil {
			return fmt.Errorf("segment %d: %w", i, err)
		}
		if i == 0 && sr.Kind() != Base || i > 0 && sr.Kind() != Delta {
			return fmt.Errorf("segment %d: %w: kind %d where a %s is expected", i, ErrCorruptSegment, sr.Kind(), expected(i))
		}
		for {
			n, err := sr.nextBatch(batch[:])
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("segment %d: %w", i, err)
			}
			for j, rec := range batch[:n] {
				hs[j] = e.hash(rec.Key)
			}
			e.touch(hs[:n])
			for j, rec := range batch[:n] {
				if tombs != nil {
					if _, deleted := tombs[string(rec.Key)]; deleted {
						continue
					}
				}
				at, present := e.find(rec.Key, hs[j])
				switch {
				case present:
				case rec.Deleted:
					if tombs == nil {
						tombs = map[string]struct{}{}
					}
					tombs[string(rec.Key)] = struct{}{}
				default:
					e.insert(at, hs[j], rec.Key, rec.Value)
					size += int64(len(rec.Key) + len(rec.Value))
				}
			}
		}
	}
	s.e, s.over, s.view, s.n, s.size, s.ord = e, nil, nil, e.n, size, nil
	s.dirty = make(map[string]struct{})
	return nil
}

func expected(i int) string {
	if i == 0 {
		return "base"
	}
	return "delta"
}

// Merge reads a Base segment and the Delta segments that follow it and writes the state
// they describe as one Base segment to w, streaming: it holds one record per input at a
// time, whatever the state's size. It returns the number of records written. An input
// that is not well formed makes it fail; what it wrote to w is then to be discarded.
func Merge(w io.Writer, base io.Reader, deltas ...io.Reader) (int, error) {
	readers := make([]*SegmentReader, 0, 1+len(deltas))
	heads := make([]*Record, 0, 1+len(deltas))
	for i, in := range append([]io.Reader{base}, deltas...) {
		sr, err := NewSegmentReader(in)
		if err != nil {
			return 0, fmt.Errorf("segment %d: %w", i, err)
		}
		if i == 0 && sr.Kind() != Base || i > 0 && sr.Kind() != Delta {
			return 0, fmt.Errorf("segment %d: %w: kind %d where a %s is expected", i, ErrCorruptSegment, sr.Kind(), expected(i))
		}
		readers = append(readers, sr)
		heads = append(heads, nil)
	}
	advance := func(i int) error {
		rec, err := readers[i].Next()
		if err == io.EOF {
			heads[i] = nil
			return nil
		}
		if err != nil {
			return fmt.Errorf("segment %d: %w", i, err)
		}
		heads[i] = &rec
		return nil
	}
	for i := range readers {
		if err := advance(i); err != nil {
			return 0, err
		}
	}
	sw := newSegmentWriter(w, Base)
	for {
		// The smallest key among the heads; for equal keys the newest segment wins.
		win := -1
		for i, h := range heads {
			if h == nil {
				continue
			}
			if win < 0 || bytes.Compare(h.Key, heads[win].Key) <= 0 {
				win = i
			}
		}
		if win < 0 {
			break
		}
		if rec := heads[win]; !rec.Deleted {
			if err := sw.write(*rec); err != nil {
				return 0, err
			}
		}
		key := bytes.Clone(heads[win].Key)
		for i, h := range heads {
			if h != nil && bytes.Equal(h.Key, key) {
				if err := advance(i); err != nil {
					return 0, err
				}
			}
		}
	}
	return sw.count, sw.close()
}
