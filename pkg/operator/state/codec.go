package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// Codec encodes values of type T to bytes and back.
type Codec[T any] interface {
	Encode(v T) ([]byte, error)
	Decode(data []byte) (T, error)
}

// JSON is a Codec that encodes values with encoding/json.
func JSON[T any]() Codec[T] { return jsonCodec[T]{} }

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Encode(v T) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec[T]) Decode(data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// Uint64 is a Codec for uint64 values: 8 bytes, big-endian.
var Uint64 Codec[uint64] = uint64Codec{}

type uint64Codec struct{}

func (uint64Codec) Encode(v uint64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, v), nil
}

func (uint64Codec) Decode(data []byte) (uint64, error) {
	if len(data) != 8 {
		return 0, fmt.Errorf("uint64 value of %d bytes; want 8", len(data))
	}
	return binary.BigEndian.Uint64(data), nil
}

// Int64 is a Codec for int64 values: 8 bytes, big-endian two's complement.
var Int64 Codec[int64] = int64Codec{}

type int64Codec struct{}

func (int64Codec) Encode(v int64) ([]byte, error) { return Uint64.Encode(uint64(v)) }

func (int64Codec) Decode(data []byte) (int64, error) {
	u, err := Uint64.Decode(data)
	return int64(u), err
}

// String is a Codec for strings: their bytes.
var String Codec[string] = stringCodec{}

type stringCodec struct{}

func (stringCodec) Encode(v string) ([]byte, error)    { return []byte(v), nil }
func (stringCodec) Decode(data []byte) (string, error) { return string(data), nil }

// Map is a typed view of the keys of a Store under a prefix: string keys, values of type
// T encoded by a Codec.
type Map[T any] struct {
	s      *Store
	prefix string
	codec  Codec[T]
	key    []byte
}

// NewMap returns the view of the keys of s that start with prefix, with values encoded
// by codec. Views with different prefixes, none a prefix of another, do not overlap.
func NewMap[T any](s *Store, prefix string, codec Codec[T]) *Map[T] {
	return &Map[T]{s: s, prefix: prefix, codec: codec}
}

func (m *Map[T]) fullKey(key string) []byte {
	m.key = append(append(m.key[:0], m.prefix...), key...)
	return m.key
}

// Get returns the value of key, whether it is present, and an error when the stored
// bytes do not decode.
func (m *Map[T]) Get(key string) (T, bool, error) {
	data, ok := m.s.Get(m.fullKey(key))
	if !ok {
		var zero T
		return zero, false, nil
	}
	v, err := m.codec.Decode(data)
	if err != nil {
		return v, true, fmt.Errorf("state key %q: %w", m.prefix+key, err)
	}
	return v, true, nil
}

// Put sets key to v.
func (m *Map[T]) Put(key string, v T) error {
	data, err := m.codec.Encode(v)
	if err != nil {
		return fmt.Errorf("state key %q: %w", m.prefix+key, err)
	}
	m.s.Put(m.fullKey(key), data)
	return nil
}

// Delete removes key.
func (m *Map[T]) Delete(key string) { m.s.Delete(m.fullKey(key)) }

// Range calls fn for every key of the view, in ascending order and without the prefix,
// until fn returns false or a value does not decode (that error is returned).
func (m *Map[T]) Range(fn func(key string, v T) bool) error {
	var err error
	m.s.Range([]byte(m.prefix), func(k, data []byte) bool {
		v, derr := m.codec.Decode(data)
		if derr != nil {
			err = fmt.Errorf("state key %q: %w", k, derr)
			return false
		}
		return fn(string(k[len(m.prefix):]), v)
	})
	return err
}
