package messages

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// SchemaVersion is the major schema version this build writes into every msgpack message
// (its "schema" field) and the only one it reads: a message of another major version is
// refused. Changes that an older reader can safely ignore (a new field, a new enum value
// where docs/compatibility.md says that is safe) keep the major version and raise the
// minor one instead.
const SchemaVersion = 1

// SchemaMinor is the minor schema version of this build. A writer at minor 1 or more puts
// it under MinorKey; this build, at minor 0, writes no MinorKey, so that readers from
// before minor versions existed still read what it writes. Readers accept every minor
// version of their major one and skip the fields they do not know.
const SchemaMinor = 0

// MinorKey is the optional top-level msgpack key holding the writer's minor schema
// version, an integer of 0 or more; absent means 0.
const MinorKey = "minor"

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
	buf := encodeBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			encodeBuffers.Put(buf)
		}
	}()
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return bytes.Clone(buf.Bytes()), nil
}

// encodeBuffers are Marshal's scratch buffers: a message is encoded into one that has
// grown to fit earlier messages, then copied out at its exact size.
var encodeBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer is the largest scratch buffer kept for reuse: a rare large message does
// not pin its buffer.
const maxPooledBuffer = 64 << 10

// Unmarshal decodes msgpack data into m. It tolerates what a newer minor version may
// write: fields this build does not know are skipped (checked only for being well-formed
// and bounded, see docs/compatibility.md), any MinorKey is accepted, and Validate accepts
// enum values from newer builds where acting on them is safe. Everything else is strict:
// repeated fields, wrong types (nil for a value, a negative number for an unsigned field,
// an integer too large for its field, binary data for a string), trailing bytes, a
// missing schema version or another major one and invalid values are all errors wrapping
// ErrMalformed. m must be a pointer to a struct. On error m may be partly filled and must
// not be used. m is reset to its zero value first, so a reused value keeps nothing from
// an earlier message.
func Unmarshal(data []byte, m Message) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: %T: empty payload", ErrMalformed, m)
	}
	t := reflect.TypeOf(m)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || reflect.ValueOf(m).IsNil() {
		return fmt.Errorf("unmarshal into %T: want a non-nil pointer to a struct", m)
	}
	if v, ok := peekSchema(data); ok && !v.neg && v.u > SchemaVersion {
		return fmt.Errorf("%w: %T: schema version %s; this build reads 1-%d (a newer major version: upgrade this reader)", ErrMalformed, m, v.intText(), SchemaVersion)
	}
	rv := reflect.ValueOf(m).Elem()
	rv.SetZero()
	r := mpReader{b: data}
	if err := decodeValue(&r, rv, ""); err != nil {
		return fmt.Errorf("%w: %T: %w", ErrMalformed, m, err)
	}
	if r.rest() != 0 {
		return fmt.Errorf("%w: %T: %d trailing bytes after the message", ErrMalformed, m, r.rest())
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
