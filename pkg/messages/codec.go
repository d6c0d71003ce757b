package messages

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// SchemaVersion is the schema version this build writes into every msgpack message and the
// newest one it reads.
const SchemaVersion = 1

// ErrMalformed is returned (wrapped) when a message cannot be decoded or fails validation.
var ErrMalformed = errors.New("malformed message")

// Message is a msgpack wire message: it knows its schema version and can check its values.
type Message interface {
	// SchemaVersion returns the schema version the message was written with.
	SchemaVersion() int
	// Validate reports the first out-of-range or missing value, or nil.
	Validate() error
}

// Marshal encodes m as msgpack after checking it with Validate.
func Marshal(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes msgpack data into m strictly: unknown fields, wrong types, trailing
// bytes, a missing or newer schema version and invalid values are all errors wrapping
// ErrMalformed. On error m may be partly filled and must not be used.
func Unmarshal(data []byte, m Message) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: %T: empty payload", ErrMalformed, m)
	}
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(m); err != nil {
		return fmt.Errorf("%w: %T: %w", ErrMalformed, m, err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: %T: %d trailing bytes after the message", ErrMalformed, m, r.Len())
	}
	switch v := m.SchemaVersion(); {
	case v == 0:
		return fmt.Errorf("%w: %T: schema version missing; allowed: 1-%d", ErrMalformed, m, SchemaVersion)
	case v < 0 || v > SchemaVersion:
		return fmt.Errorf("%w: %T: schema version %d; this build reads 1-%d", ErrMalformed, m, v, SchemaVersion)
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}
