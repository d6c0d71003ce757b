package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// SegmentReader reads the records of one segment in key order and checks its format,
// order, record count and checksum. Its records are only trustworthy once Next returned
// io.EOF: a caller that applies them must be able to discard what it applied.
type SegmentReader struct {
	r io.Reader
	// buf[pos:end] is read and not parsed yet; buf[summed:pos] is parsed and not added
	// to the checksum yet.
	buf              []byte
	pos, end, summed int
	rerr             error
	crc              uint32
	// noRead makes parsing stop with errNeedRead rather than read or move the buffer.
	noRead bool
	kind   Kind
	count  uint64
	last   []byte
	done   bool
}

// readSize is how much a SegmentReader reads at a time.
const readSize = 256 << 10

// NewSegmentReader reads the header of the segment r holds.
func NewSegmentReader(r io.Reader) (*SegmentReader, error) {
	sr := &SegmentReader{r: r, buf: make([]byte, readSize)}
	n := len(segmentMagic) + 2
	if err := sr.fill(n); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorruptSegment, err)
	}
	hdr := sr.buf[sr.pos : sr.pos+n]
	sr.pos += n
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

// fill makes at least n unparsed bytes available, or fails with io.ErrUnexpectedEOF
// (or the read error) when the segment ends first.
func (sr *SegmentReader) fill(n int) error {
	if err := sr.avail(n); err != nil {
		return err
	}
	if sr.end-sr.pos < n {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// errNeedRead stops a parse in noRead mode where more data is needed.
var errNeedRead = errors.New("segment reader: needs to read")

// avail makes up to n unparsed bytes available, fewer only when the segment ends
// first; it fails only on a read error. Parsed bytes may move: positions are only
// kept as sr.pos.
func (sr *SegmentReader) avail(n int) error {
	if sr.end-sr.pos >= n {
		return nil
	}
	if sr.noRead {
		return errNeedRead
	}
	sr.sum()
	copy(sr.buf, sr.buf[sr.pos:sr.end])
	sr.end -= sr.pos
	sr.pos, sr.summed = 0, 0
	if n > len(sr.buf) {
		sr.buf = append(sr.buf[:sr.end], make([]byte, n-sr.end)...)
		sr.buf = sr.buf[:cap(sr.buf)]
	}
	for sr.end < n && sr.rerr == nil {
		m, err := sr.r.Read(sr.buf[sr.end:])
		sr.end += m
		sr.rerr = err
	}
	if sr.rerr != nil && sr.rerr != io.EOF {
		return sr.rerr
	}
	return nil
}

// sum adds the parsed bytes to the checksum.
func (sr *SegmentReader) sum() {
	sr.crc = crc32.Update(sr.crc, castagnoli, sr.buf[sr.summed:sr.pos])
	sr.summed = sr.pos
}

// uvarint parses the uvarint at off bytes past the unparsed data's start and returns it
// with its length.
func (sr *SegmentReader) uvarint(off int) (uint64, int, error) {
	if err := sr.avail(off + binary.MaxVarintLen64); err != nil {
		return 0, 0, err
	}
	if sr.pos+off > sr.end {
		return 0, 0, io.ErrUnexpectedEOF
	}
	x, n := binary.Uvarint(sr.buf[sr.pos+off : sr.end])
	switch {
	case n == 0:
		return 0, 0, io.ErrUnexpectedEOF
	case n < 0:
		return 0, 0, fmt.Errorf("varint overflows")
	}
	return x, n, nil
}

// Next returns the next record, or io.EOF after the last one once the trailer checked
// out. The record's slices are valid until the next call.
func (sr *SegmentReader) Next() (Record, error) {
	if sr.done {
		return Record{}, io.EOF
	}
	start := sr.pos
	rec, err := sr.next()
	if err == errNeedRead {
		sr.pos = start
		return Record{}, err
	}
	if err != nil && err != io.EOF {
		return Record{}, fmt.Errorf("%w: record %d: %w", ErrCorruptSegment, sr.count, err)
	}
	return rec, err
}

func (sr *SegmentReader) next() (Record, error) {
	if err := sr.fill(1); err != nil {
		return Record{}, err
	}
	op := sr.buf[sr.pos]
	sr.pos++
	switch op {
	case opEnd:
		if sr.noRead {
			return Record{}, errNeedRead
		}
		return Record{}, sr.trailer()
	case opPut:
	case opDelete:
		if sr.kind == Base {
			return Record{}, fmt.Errorf("deletion in a base segment")
		}
	default:
		return Record{}, fmt.Errorf("unknown operation %d", op)
	}
	rec, ok := sr.short(op == opDelete)
	if !ok {
		var err error
		if rec, err = sr.long(op == opDelete); err != nil {
			return Record{}, err
		}
	}
	if sr.count > 0 && bytes.Compare(rec.Key, sr.last) <= 0 {
		return Record{}, fmt.Errorf("key %q after %q: keys out of order", rec.Key, sr.last)
	}
	sr.last = append(sr.last[:0], rec.Key...)
	sr.count++
	return rec, nil
}

// short parses, without a call per field, a record whose key and value lengths take a
// byte each and which lies wholly in the data read; it reports whether it did.
func (sr *SegmentReader) short(deleted bool) (Record, bool) {
	b := sr.buf[sr.pos:sr.end]
	if len(b) == 0 || b[0] >= 0x80 {
		return Record{}, false
	}
	k := 1 + int(b[0])
	if deleted {
		if len(b) < k {
			return Record{}, false
		}
		sr.pos += k
		return Record{Key: b[1:k:k], Deleted: true}, true
	}
	if len(b) <= k || b[k] >= 0x80 || len(b) < k+1+int(b[k]) {
		return Record{}, false
	}
	end := k + 1 + int(b[k])
	sr.pos += end
	return Record{Key: b[1:k:k], Value: b[k+1 : end : end]}, true
}

// long parses the lengths, key and value of a record, reading as needed.
func (sr *SegmentReader) long(deleted bool) (Record, error) {
	klen, n, err := sr.uvarint(0)
	if err != nil {
		return Record{}, err
	}
	if klen > maxKeyLen {
		return Record{}, fmt.Errorf("key of %d bytes", klen)
	}
	sr.pos += n
	k := int(klen)
	rec := Record{Deleted: deleted}
	size := k
	vlen, n := uint64(0), 0
	if !deleted {
		if vlen, n, err = sr.uvarint(k); err != nil {
			return Record{}, err
		}
		if vlen > maxValueLen {
			return Record{}, fmt.Errorf("value of %d bytes", vlen)
		}
		size += n + int(vlen)
	}
	if err := sr.fill(size); err != nil {
		return Record{}, err
	}
	rec.Key = sr.buf[sr.pos : sr.pos+k : sr.pos+k]
	if !deleted {
		v := sr.pos + k + n
		rec.Value = sr.buf[v : v+int(vlen) : v+int(vlen)]
	}
	sr.pos += size
	return rec, nil
}

// nextBatch parses records into recs: the next one, reading as needed, then those that
// follow as long as they lie wholly in the data already read, so that the slices of all
// of them stay valid until the next call. It returns how many it parsed, and io.EOF
// (with none) after the last one once the trailer checked out.
func (sr *SegmentReader) nextBatch(recs []Record) (int, error) {
	rec, err := sr.Next()
	if err != nil {
		return 0, err
	}
	recs[0] = rec
	sr.noRead = true
	defer func() { sr.noRead = false }()
	for i := 1; i < len(recs); i++ {
		rec, err := sr.Next()
		if err == errNeedRead {
			return i, nil
		}
		if err != nil {
			return i, err
		}
		recs[i] = rec
	}
	return len(recs), nil
}

// trailer checks the record count and the checksum, and that nothing follows.
func (sr *SegmentReader) trailer() error {
	n, m, err := sr.uvarint(0)
	if err != nil {
		return err
	}
	sr.pos += m
	if n != sr.count {
		return fmt.Errorf("trailer counts %d records, read %d", n, sr.count)
	}
	sr.sum()
	want := sr.crc
	if err := sr.fill(4); err != nil {
		return fmt.Errorf("checksum: %w", io.ErrUnexpectedEOF)
	}
	got := binary.BigEndian.Uint32(sr.buf[sr.pos:])
	sr.pos += 4
	if got != want {
		return fmt.Errorf("checksum %08x, computed %08x", got, want)
	}
	if sr.pos < sr.end {
		return fmt.Errorf("data after the trailer")
	}
	for sr.rerr == nil {
		var b [1]byte
		var m int
		m, sr.rerr = sr.r.Read(b[:])
		if m > 0 {
			return fmt.Errorf("data after the trailer")
		}
	}
	if sr.rerr != io.EOF {
		return sr.rerr
	}
	sr.done = true
	return io.EOF
}
