package messages

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"

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

// Marshal encodes m as msgpack after checking its schema version (1 to SchemaVersion;
// writers set SchemaVersion) and its values with Validate.
func Marshal(m Message) ([]byte, error) {
	if v := m.SchemaVersion(); v < 1 || v > SchemaVersion {
		return nil, fmt.Errorf("encode %T: schema version %d; set it to messages.SchemaVersion (%d)", m, v, SchemaVersion)
	}
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

// Unmarshal decodes msgpack data into m strictly: unknown or repeated fields, wrong types
// (nil for a value, a negative number for an unsigned field, an integer too large for its
// field, binary data for a string), trailing bytes, a missing or newer schema version and
// invalid values are all errors wrapping ErrMalformed. m must be a pointer to a struct. On
// error m may be partly filled and must not be used. m is reset to its zero value first,
// so a reused value keeps nothing from an earlier message.
func Unmarshal(data []byte, m Message) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: %T: empty payload", ErrMalformed, m)
	}
	t := reflect.TypeOf(m)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || reflect.ValueOf(m).IsNil() {
		return fmt.Errorf("unmarshal into %T: want a non-nil pointer to a struct", m)
	}
	if v, ok := peekSchema(data); ok && !v.neg && v.u > SchemaVersion {
		return fmt.Errorf("%w: %T: schema version %s; this build reads 1-%d", ErrMalformed, m, v.intText(), SchemaVersion)
	}
	reflect.ValueOf(m).Elem().SetZero()
	r := mpReader{b: data}
	if err := checkValue(&r, t.Elem(), ""); err != nil {
		return fmt.Errorf("%w: %T: %w", ErrMalformed, m, err)
	}
	if r.rest() != 0 {
		return fmt.Errorf("%w: %T: %d trailing bytes after the message", ErrMalformed, m, r.rest())
	}
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(m); err != nil {
		return fmt.Errorf("%w: %T: %w", ErrMalformed, m, err)
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
