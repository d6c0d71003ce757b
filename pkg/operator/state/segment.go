package state

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"slices"
)

// Kind says what a segment holds.
type Kind uint8

// Kind values.
const (
	// Base is a whole state: puts only.
	Base Kind = 1
	// Delta is the changes since an earlier state: puts and deletes.
	Delta Kind = 2
)

// SegmentVersion is the segment format version this package writes and reads.
const SegmentVersion = 1

// segmentMagic opens every segment.
const segmentMagic = "CAIRNSEG"

// Record operations in a segment.
const (
	opEnd    = 0
	opPut    = 1
	opDelete = 2
)

// maxKeyLen and maxValueLen bound what a reader accepts, so that a corrupt length cannot
// make it allocate without bound.
const (
	maxKeyLen   = 1 << 20
	maxValueLen = 1 << 30
)

// ErrCorruptSegment is wrapped by the errors of reading a segment that is not well
// formed: a wrong magic, version or kind, keys out of order, a bad checksum, a truncation.
var ErrCorruptSegment = errors.New("corrupt state segment")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one entry of a segment.
type Record struct {
	Key []byte
	// Value is the value put; nil for a deletion.
	Value []byte
	// Deleted marks a deletion (Delta segments only).
	Deleted bool
}

// WriteSegment writes the changes cs, applied in order (a later one wins for a key), as
// one segment of kind to w, and returns the number of records written. A Base segment
// leaves the deletions out: it is the state of a Store that started empty and went
// through cs.
func WriteSegment(w io.Writer, kind Kind, cs ...*Changes) (int, error) {
	merged := map[string][]byte{}
	if len(cs) == 1 {
		merged = cs[0].values
	} else {
		for _, c := range cs {
			maps.Copy(merged, c.values)
		}
	}
	keys := slices.Sorted(maps.Keys(merged))
	sw, err := newSegmentWriter(w, kind)
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		v := merged[k]
		if v == nil && kind == Base {
			continue
		}
		if err := sw.write(Record{Key: []byte(k), Value: v, Deleted: v == nil}); err != nil {
			return 0, err
		}
	}
	return sw.count, sw.close()
}

// segmentWriter writes one segment: header, records in ascending key order, trailer.
type segmentWriter struct {
	bw    *bufio.Writer
	crc   hash.Hash32
	count int
	last  []byte
	buf   [binary.MaxVarintLen64]byte
}

func newSegmentWriter(w io.Writer, kind Kind) (*segmentWriter, error) {
	sw := &segmentWriter{bw: bufio.NewWriterSize(w, 64<<10), crc: crc32.New(castagnoli)}
	return sw, sw.put(append([]byte(segmentMagic), SegmentVersion, byte(kind)))
}

// put writes p and adds it to the checksum.
func (sw *segmentWriter) put(p []byte) error {
	sw.crc.Write(p)
	_, err := sw.bw.Write(p)
	return err
}

func (sw *segmentWriter) uvarint(n uint64) error {
	return sw.put(sw.buf[:binary.PutUvarint(sw.buf[:], n)])
}

func (sw *segmentWriter) write(rec Record) error {
	if sw.count > 0 && bytes.Compare(rec.Key, sw.last) <= 0 {
		return fmt.Errorf("segment: key %q written after %q", rec.Key, sw.last)
	}
	sw.last = append(sw.last[:0], rec.Key...)
	op := byte(opPut)
	if rec.Deleted {
		op = opDelete
	}
	if err := sw.put([]byte{op}); err != nil {
		return err
	}
	if err := sw.uvarint(uint64(len(rec.Key))); err != nil {
		return err
	}
	if err := sw.put(rec.Key); err != nil {
		return err
	}
	if rec.Deleted {
		sw.count++
		return nil
	}
	if err := sw.uvarint(uint64(len(rec.Value))); err != nil {
		return err
	}
	sw.count++
	return sw.put(rec.Value)
}

// close writes the trailer: the end marker, the record count and the big-endian CRC-32C
// of every byte before the checksum.
func (sw *segmentWriter) close() error {
	if err := sw.put([]byte{opEnd}); err != nil {
		return err
	}
	if err := sw.uvarint(uint64(sw.count)); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], sw.crc.Sum32())
	if _, err := sw.bw.Write(sum[:]); err != nil {
		return err
	}
	return sw.bw.Flush()
}
