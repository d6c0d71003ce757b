package state

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// SegmentReader reads the records of one segment in key order and checks its format,
// order, record count and checksum. Its records are only trustworthy once Next returned
// io.EOF: a caller that applies them must be able to discard what it applied.
type SegmentReader struct {
	br    *bufio.Reader
	crc   hash.Hash32
	kind  Kind
	count uint64
	last  []byte
	done  bool
	buf   []byte
}

// NewSegmentReader reads the header of the segment r holds.
func NewSegmentReader(r io.Reader) (*SegmentReader, error) {
	sr := &SegmentReader{br: bufio.NewReaderSize(r, 64<<10), crc: crc32.New(castagnoli)}
	hdr := make([]byte, len(segmentMagic)+2)
	if err := sr.full(hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorruptSegment, err)
	}
	if string(hdr[:len(segmentMagic)]) != segmentMagic {
		return nil, fmt.Errorf("%w: not a segment (magic %q)", ErrCorruptSegment, hdr[:len(segmentMagic)])
	}
	if v := hdr[len(segmentMagic)]; v != SegmentVersion {
		return nil, fmt.Errorf("%w: format version %d; this build reads %d", ErrCorruptSegment, v, SegmentVersion)
	}
	sr.kind = Kind(hdr[len(segmentMagic)+1])
	if sr.kind != Base && sr.kind != Delta {
		return nil, fmt.Errorf("%w: kind %d", ErrCorruptSegment, sr.kind)
	}
	return sr, nil
}

// Kind returns the segment's kind.
func (sr *SegmentReader) Kind() Kind { return sr.kind }

// full reads len(p) bytes and adds them to the checksum.
func (sr *SegmentReader) full(p []byte) error {
	if _, err := io.ReadFull(sr.br, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	sr.crc.Write(p)
	return nil
}

func (sr *SegmentReader) uvarint() (uint64, error) {
	var b [1]byte
	var x uint64
	var s uint
	for i := range binary.MaxVarintLen64 {
		if err := sr.full(b[:]); err != nil {
			return 0, err
		}
		if b[0] < 0x80 {
			if i == binary.MaxVarintLen64-1 && b[0] > 1 {
				return 0, fmt.Errorf("varint overflows")
			}
			return x | uint64(b[0])<<s, nil
		}
		x |= uint64(b[0]&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("varint overflows")
}

// Next returns the next record, or io.EOF after the last one once the trailer checked
// out. The record's slices are valid until the next call.
func (sr *SegmentReader) Next() (Record, error) {
	if sr.done {
		return Record{}, io.EOF
	}
	rec, err := sr.next()
	if err != nil && err != io.EOF {
		return Record{}, fmt.Errorf("%w: record %d: %w", ErrCorruptSegment, sr.count, err)
	}
	return rec, err
}

func (sr *SegmentReader) next() (Record, error) {
	var op [1]byte
	if err := sr.full(op[:]); err != nil {
		return Record{}, err
	}
	switch op[0] {
	case opEnd:
		return Record{}, sr.trailer()
	case opPut:
	case opDelete:
		if sr.kind == Base {
			return Record{}, fmt.Errorf("deletion in a base segment")
		}
	default:
		return Record{}, fmt.Errorf("unknown operation %d", op[0])
	}
	klen, err := sr.uvarint()
	if err != nil {
		return Record{}, err
	}
	if klen > maxKeyLen {
		return Record{}, fmt.Errorf("key of %d bytes", klen)
	}
	rec := Record{Deleted: op[0] == opDelete}
	vlen := uint64(0)
	sr.buf = grow(sr.buf, klen)
	if err := sr.full(sr.buf[:klen]); err != nil {
		return Record{}, err
	}
	if !rec.Deleted {
		if vlen, err = sr.uvarint(); err != nil {
			return Record{}, err
		}
		if vlen > maxValueLen {
			return Record{}, fmt.Errorf("value of %d bytes", vlen)
		}
		sr.buf = grow(sr.buf, klen+vlen)
		if err := sr.full(sr.buf[klen : klen+vlen]); err != nil {
			return Record{}, err
		}
		rec.Value = sr.buf[klen : klen+vlen : klen+vlen]
	}
	rec.Key = sr.buf[:klen:klen]
	if sr.count > 0 && bytes.Compare(rec.Key, sr.last) <= 0 {
		return Record{}, fmt.Errorf("key %q after %q: keys out of order", rec.Key, sr.last)
	}
	sr.last = append(sr.last[:0], rec.Key...)
	sr.count++
	return rec, nil
}

// grow returns b with room for n bytes, keeping its contents.
func grow(b []byte, n uint64) []byte {
	if uint64(cap(b)) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*uint64(cap(b))))
	copy(nb, b)
	return nb
}

// trailer checks the record count and the checksum, and that nothing follows.
func (sr *SegmentReader) trailer() error {
	n, err := sr.uvarint()
	if err != nil {
		return err
	}
	if n != sr.count {
		return fmt.Errorf("trailer counts %d records, read %d", n, sr.count)
	}
	want := sr.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(sr.br, sum[:]); err != nil {
		return fmt.Errorf("checksum: %w", io.ErrUnexpectedEOF)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return fmt.Errorf("checksum %08x, computed %08x", got, want)
	}
	switch _, err := sr.br.ReadByte(); {
	case err == nil:
		return fmt.Errorf("data after the trailer")
	case err != io.EOF:
		return err
	}
	sr.done = true
	return io.EOF
}
