package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	sw := newSegmentWriter(w, kind)
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
	w     io.Writer
	buf   []byte
	crc   uint32
	count int
	last  []byte
}

// writeSize is how much a segmentWriter buffers before it writes.
const writeSize = 64 << 10

func newSegmentWriter(w io.Writer, kind Kind) *segmentWriter {
	sw := &segmentWriter{w: w, buf: make([]byte, 0, writeSize+1024)}
	sw.buf = append(append(sw.buf, segmentMagic...), SegmentVersion, byte(kind))
	return sw
}

// flush adds the buffered bytes to the checksum and writes them.
func (sw *segmentWriter) flush() error {
	sw.crc = crc32.Update(sw.crc, castagnoli, sw.buf)
	_, err := sw.w.Write(sw.buf)
	sw.buf = sw.buf[:0]
	return err
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
	sw.buf = append(sw.buf, op)
	sw.buf = binary.AppendUvarint(sw.buf, uint64(len(rec.Key)))
	sw.buf = append(sw.buf, rec.Key...)
	if !rec.Deleted {
		sw.buf = binary.AppendUvarint(sw.buf, uint64(len(rec.Value)))
		sw.buf = append(sw.buf, rec.Value...)
	}
	sw.count++
	if len(sw.buf) >= writeSize {
		return sw.flush()
	}
	return nil
}

// close writes the trailer: the end marker, the record count and the big-endian CRC-32C
// of every byte before the checksum.
func (sw *segmentWriter) close() error {
	sw.buf = append(sw.buf, opEnd)
	sw.buf = binary.AppendUvarint(sw.buf, uint64(sw.count))
	if err := sw.flush(); err != nil {
		return err
	}
	_, err := sw.w.Write(binary.BigEndian.AppendUint32(sw.buf, sw.crc))
	return err
}
