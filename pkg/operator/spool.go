package operator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// spoolMemLimit is how many bytes a spool keeps in memory before it moves to a file.
const spoolMemLimit = 8 << 20

// spool buffers one snapshot so that it can be hashed before it is uploaded, and re-read
// for every upload attempt: in memory up to its limit, in a temporary file above it.
// It is used by one goroutine at a time.
type spool struct {
	limit int
	mem   bytes.Buffer
	file  *os.File
	size  int64
}

func newSpool(limit int) *spool { return &spool{limit: limit} }

// Write implements io.Writer.
func (s *spool) Write(p []byte) (int, error) {
	if s.file == nil && s.mem.Len()+len(p) > s.limit {
		f, err := os.CreateTemp("", "cairn-snapshot-*")
		if err != nil {
			return 0, fmt.Errorf("spool snapshot to a file: %w", err)
		}
		s.file = f
		if _, err := s.mem.WriteTo(f); err != nil {
			return 0, fmt.Errorf("spool snapshot to %s: %w", f.Name(), err)
		}
		s.mem = bytes.Buffer{}
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.file.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	return n, err
}

// Size is the number of bytes written.
func (s *spool) Size() int64 { return s.size }

// onFile reports whether the spool moved to a temporary file.
func (s *spool) onFile() bool { return s.file != nil }

// Reader returns a reader of everything written, from the start. Each call starts a new
// reader and invalidates the previous one.
func (s *spool) Reader() (io.Reader, error) {
	if s.file == nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind spool %s: %w", s.file.Name(), err)
	}
	return io.LimitReader(s.file, s.size), nil
}

// Close frees the memory and removes the temporary file.
func (s *spool) Close() error {
	s.mem = bytes.Buffer{}
	if s.file == nil {
		return nil
	}
	f := s.file
	s.file = nil
	return errors.Join(f.Close(), os.Remove(f.Name()))
}
