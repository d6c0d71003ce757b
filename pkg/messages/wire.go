package messages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file reads msgpack without the msgpack library (which only encodes): a
// bounds-checked header reader that allocates nothing from the lengths it reads, and
// Unmarshal's one decode, which walks a payload with it against the Go type and sets the
// values as it goes. Decoding is strict (wrong types, nil for a value, negative numbers
// for unsigned fields, integers that do not fit, duplicate keys, bin for str, non-map
// structs, malformed timestamps are errors), and no allocation is larger than the
// payload's size allows.
//
// Fields this build does not know (written by a newer minor version, see
// docs/compatibility.md) are skipped: their names must still be strings that appear
// once, and their values well-formed msgpack nested at most maxUnknownDepth deep: readers
// of earlier builds hand the whole payload to the msgpack library, which skips them
// recursively, and must do so within a bounded depth.

// mpKind is the kind of one msgpack value.
type mpKind int

const (
	mpNil mpKind = iota
	mpBool
	mpInt
	mpFloat
	mpStr
	mpBin
	mpArray
	mpMap
	mpExt
)

// mpValue is one msgpack value as read by mpReader. For arrays and maps only the header
// is read; their elements follow in the stream.
type mpValue struct {
	kind mpKind
	// b is the value of a bool.
	b bool
	// neg and u are an integer's sign and magnitude; u is also an array's or map's
	// element count.
	neg bool
	u   uint64
	// f and f32 are a float's value and whether it was written as a float32.
	f   float64
	f32 bool
	// data is the payload of a str, bin or ext value; ext is the extension type.
	data []byte
	ext  int8
}

// describe names the value as an error message should.
func (v mpValue) describe() string {
	switch v.kind {
	case mpNil:
		return "nil"
	case mpBool:
		return strconv.FormatBool(v.b)
	case mpInt:
		return "integer " + v.intText()
	case mpFloat:
		return "float " + v.floatText()
	case mpStr:
		return "a string"
	case mpBin:
		return "binary data"
	case mpArray:
		return "an array"
	case mpMap:
		return "a map"
	}
	return fmt.Sprintf("extension type %d", v.ext)
}

// intText formats an integer value in decimal.
func (v mpValue) intText() string {
	if v.neg {
		return "-" + strconv.FormatUint(v.u, 10)
	}
	return strconv.FormatUint(v.u, 10)
}

// floatText formats a float value as briefly as its width allows.
func (v mpValue) floatText() string {
	if v.f32 {
		return strconv.FormatFloat(v.f, 'g', -1, 32)
	}
	return strconv.FormatFloat(v.f, 'g', -1, 64)
}

// mpReader reads msgpack values from a byte slice.
type mpReader struct {
	b   []byte
	off int
}

func (r *mpReader) rest() int { return len(r.b) - r.off }

func (r *mpReader) take(n uint64) ([]byte, error) {
	if n > uint64(r.rest()) {
		return nil, fmt.Errorf("msgpack: %w at byte %d", io.ErrUnexpectedEOF, len(r.b))
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

// uintN reads a big-endian unsigned integer of n bytes (1, 2, 4 or 8).
func (r *mpReader) uintN(n uint64) (uint64, error) {
	b, err := r.take(n)
	if err != nil {
		return 0, err
	}
	var u uint64
	for _, c := range b {
		u = u<<8 | uint64(c)
	}
	return u, nil
}

// sizedInt reads a signed integer of n bytes into sign and magnitude.
func (r *mpReader) sizedInt(n uint64) (mpValue, error) {
	u, err := r.uintN(n)
	if err != nil {
		return mpValue{}, err
	}
	shift := 64 - 8*n
	i := int64(u<<shift) >> shift
	if i >= 0 {
		return mpValue{kind: mpInt, u: uint64(i)}, nil
	}
	return mpValue{kind: mpInt, neg: true, u: uint64(-(i + 1)) + 1}, nil
}

// payload reads a length of lenBytes bytes, then that many bytes.
func (r *mpReader) payload(kind mpKind, lenBytes uint64) (mpValue, error) {
	n, err := r.uintN(lenBytes)
	if err != nil {
		return mpValue{}, err
	}
	return r.payloadN(kind, n)
}

func (r *mpReader) payloadN(kind mpKind, n uint64) (mpValue, error) {
	d, err := r.take(n)
	if err != nil {
		return mpValue{}, err
	}
	return mpValue{kind: kind, data: d}, nil
}

// ext reads an extension's type byte and n bytes of data.
func (r *mpReader) ext(n uint64) (mpValue, error) {
	t, err := r.take(1)
	if err != nil {
		return mpValue{}, err
	}
	v, err := r.payloadN(mpExt, n)
	v.ext = int8(t[0])
	return v, err
}

// container reads an array's or map's element count of lenBytes bytes.
func (r *mpReader) container(kind mpKind, lenBytes uint64) (mpValue, error) {
	n, err := r.uintN(lenBytes)
	return mpValue{kind: kind, u: n}, err
}

// next reads one value; for an array or a map only its header.
func (r *mpReader) next() (mpValue, error) {
	b, err := r.take(1)
	if err != nil {
		return mpValue{}, err
	}
	c := b[0]
	switch {
	case c <= 0x7f:
		return mpValue{kind: mpInt, u: uint64(c)}, nil
	case c >= 0xe0:
		return mpValue{kind: mpInt, neg: true, u: uint64(0x100 - int(c))}, nil
	case c <= 0x8f:
		return mpValue{kind: mpMap, u: uint64(c & 0x0f)}, nil
	case c <= 0x9f:
		return mpValue{kind: mpArray, u: uint64(c & 0x0f)}, nil
	case c <= 0xbf:
		return r.payloadN(mpStr, uint64(c&0x1f))
	}
	switch c {
	case 0xc0:
		return mpValue{kind: mpNil}, nil
	case 0xc2, 0xc3:
		return mpValue{kind: mpBool, b: c == 0xc3}, nil
	case 0xc4, 0xc5, 0xc6:
		return r.payload(mpBin, 1<<(c-0xc4))
	case 0xc7, 0xc8, 0xc9:
		n, err := r.uintN(1 << (c - 0xc7))
		if err != nil {
			return mpValue{}, err
		}
		return r.ext(n)
	case 0xca:
		u, err := r.uintN(4)
		return mpValue{kind: mpFloat, f: float64(math.Float32frombits(uint32(u))), f32: true}, err
	case 0xcb:
		u, err := r.uintN(8)
		return mpValue{kind: mpFloat, f: math.Float64frombits(u)}, err
	case 0xcc, 0xcd, 0xce, 0xcf:
		u, err := r.uintN(1 << (c - 0xcc))
		return mpValue{kind: mpInt, u: u}, err
	case 0xd0, 0xd1, 0xd2, 0xd3:
		return r.sizedInt(1 << (c - 0xd0))
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return r.ext(1 << (c - 0xd4))
	case 0xd9, 0xda, 0xdb:
		return r.payload(mpStr, 1<<(c-0xd9))
	case 0xdc, 0xdd:
		return r.container(mpArray, 2<<(c-0xdc))
	case 0xde, 0xdf:
		return r.container(mpMap, 2<<(c-0xde))
	}
	return mpValue{}, fmt.Errorf("msgpack: reserved code 0xc1 at byte %d", r.off-1)
}

// maxUnknownDepth is how deeply arrays and maps may nest inside the value of a field
// this build does not know.
const maxUnknownDepth = 32

// skipElements skips the elements of an array or map whose header v was just read, and
// anything nested in them, without recursion. It fails when containers nest more than
// maxDepth levels below v.
func (r *mpReader) skipElements(v mpValue, maxDepth int) error {
	// open holds the elements still to read of each container entered, innermost last.
	var open []uint64
	enter := func(v mpValue) error {
		n := v.u
		switch v.kind {
		case mpArray:
		case mpMap:
			n *= 2
		default:
			return nil
		}
		if len(open) == maxDepth {
			return fmt.Errorf("msgpack: arrays and maps nested more than %d deep at byte %d", maxDepth, r.off)
		}
		open = append(open, n)
		return nil
	}
	if err := enter(v); err != nil {
		return err
	}
	for len(open) > 0 {
		if open[len(open)-1] == 0 {
			open = open[:len(open)-1]
			continue
		}
		open[len(open)-1]--
		e, err := r.next()
		if err != nil {
			return err
		}
		if err := enter(e); err != nil {
			return err
		}
	}
	return nil
}

// peekSchema returns the value of the top-level "schema" key when data is a map holding
// one as an integer, so that a newer writer's message is reported as such rather than as
// its first unknown field.
func peekSchema(data []byte) (mpValue, bool) {
	r := mpReader{b: data}
	top, err := r.next()
	if err != nil || top.kind != mpMap {
		return mpValue{}, false
	}
	for range top.u {
		k, err := r.next()
		if err != nil || k.kind != mpStr {
			return mpValue{}, false
		}
		v, err := r.next()
		if err != nil {
			return mpValue{}, false
		}
		if string(k.data) == "schema" {
			return v, v.kind == mpInt
		}
		if err := r.skipElements(v, maxUnknownDepth); err != nil {
			return mpValue{}, false
		}
	}
	return mpValue{}, false
}

var timeType = reflect.TypeFor[time.Time]()

// wireField is a struct field as the msgpack library names it.
type wireField struct {
	index int
	typ   reflect.Type
	name  string
}

var wireFieldsCache sync.Map // reflect.Type → map[string]wireField

// wireFields returns t's fields by msgpack name: the tag's name, else the Go name; "-"
// and unexported fields are left out, as the library does.
func wireFields(t reflect.Type) map[string]wireField {
	if f, ok := wireFieldsCache.Load(t); ok {
		return f.(map[string]wireField)
	}
	fields := make(map[string]wireField, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = wireField{index: i, typ: f.Type, name: name}
	}
	wireFieldsCache.Store(t, fields)
	return fields
}

// errWire is wrapped by every error decodeValue returns about the payload.
var errWire = errors.New("msgpack")

// decodeValue reads one value from r into rv, which must be settable, checking that it is
// an exact encoding of a value of rv's type: the kind the type needs, integers in its
// range, nil only for maps and slices, string keys, no unknown or repeated keys,
// timestamps as extension -1. Values are set as the msgpack library would set them (a nil
// map or slice stays nil, an empty one is empty, a timestamp is in the local time zone
// unless it is the zero time). path names the value in errors. Recursion follows the Go
// type, never the payload, so its depth is bounded by the type.
func decodeValue(r *mpReader, rv reflect.Value, path string) error {
	v, err := r.next()
	if err != nil {
		return fmt.Errorf("%s: %w", pathName(path), err)
	}
	t := rv.Type()
	if t == timeType {
		tm, err := decodeTime(v, path)
		if err == nil {
			rv.Set(reflect.ValueOf(tm))
		}
		return err
	}
	switch t.Kind() {
	case reflect.Struct:
		return decodeStruct(r, v, rv, path)
	case reflect.Map:
		return decodeMap(r, v, rv, path)
	case reflect.Slice:
		if v.kind == mpNil {
			rv.SetZero()
			return nil
		}
		if v.kind != mpArray {
			return wrongKind(path, v, "an array")
		}
		// Each element takes at least one byte: the payload bounds the allocation.
		rv.Set(reflect.MakeSlice(t, 0, int(min(v.u, uint64(r.rest())))))
		for i := range int(v.u) {
			rv.Set(reflect.Append(rv, reflect.Zero(t.Elem())))
			if err := decodeValue(r, rv.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if v.kind != mpStr {
			return wrongKind(path, v, "a string")
		}
		rv.SetString(string(v.data))
		return nil
	case reflect.Bool:
		if v.kind != mpBool {
			return wrongKind(path, v, "true or false")
		}
		rv.SetBool(v.b)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		limit := uint64(1) << (t.Bits() - 1)
		if v.kind != mpInt || v.neg && v.u > limit || !v.neg && v.u > limit-1 {
			return wrongKind(path, v, fmt.Sprintf("an integer from -%d to %d", limit, limit-1))
		}
		n := int64(v.u)
		if v.neg {
			n = int64(-v.u)
		}
		rv.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		limit := uint64(math.MaxUint64) >> (64 - t.Bits())
		if v.kind != mpInt || v.neg || v.u > limit {
			return wrongKind(path, v, fmt.Sprintf("an integer from 0 to %d", limit))
		}
		rv.SetUint(v.u)
		return nil
	}
	return fmt.Errorf("%w: %s: no wire check for Go type %s", errWire, pathName(path), t)
}

func decodeStruct(r *mpReader, v mpValue, rv reflect.Value, path string) error {
	if v.kind != mpMap {
		return wrongKind(path, v, "a map of fields")
	}
	fields := wireFields(rv.Type())
	var seen fieldSet
	var unknown map[string]struct{}
	for range v.u {
		k, err := r.next()
		if err != nil {
			return fmt.Errorf("%s: %w", pathName(path), err)
		}
		if k.kind != mpStr {
			return wrongKind(pathName(path)+" key", k, "a field name string")
		}
		f, ok := fields[string(k.data)] // no copy of the key for the look-up
		if !ok {
			name := string(k.data)
			if _, dup := unknown[name]; dup {
				return fmt.Errorf("%w: %s: field %s appears twice", errWire, pathName(path), quoteShort(name))
			}
			if unknown == nil {
				unknown = map[string]struct{}{}
			}
			unknown[name] = struct{}{}
			if err := checkUnknown(r, path, name); err != nil {
				return err
			}
			continue
		}
		if seen.add(f.index) {
			return fmt.Errorf("%w: %s: field %s appears twice", errWire, pathName(path), quoteShort(f.name))
		}
		if err := decodeValue(r, rv.Field(f.index), joinPath(path, f.name)); err != nil {
			return err
		}
	}
	return nil
}

// fieldSet is a set of struct field indexes: a bit each for the first 64, a map beyond.
type fieldSet struct {
	low  uint64
	high map[int]bool
}

// add adds field i and reports whether it was already there.
func (s *fieldSet) add(i int) bool {
	if i < 64 {
		had := s.low&(1<<i) != 0
		s.low |= 1 << i
		return had
	}
	if s.high == nil {
		s.high = map[int]bool{}
	}
	had := s.high[i]
	s.high[i] = true
	return had
}

// checkUnknown skips the value of a field the Go type does not have. The message's
// top-level "minor" (the writer's minor schema version) must be an integer of 0 or more;
// any other value only has to be well-formed and nested at most maxUnknownDepth deep.
func checkUnknown(r *mpReader, path, name string) error {
	v, err := r.next()
	if err != nil {
		return fmt.Errorf("%s: %w", joinPath(path, name), err)
	}
	if path == "" && name == MinorKey && (v.kind != mpInt || v.neg) {
		return wrongKind(name, v, "an integer of 0 or more")
	}
	if err := r.skipElements(v, maxUnknownDepth); err != nil {
		return fmt.Errorf("%w: %s (a field this build does not know): %w", errWire, joinPath(path, name), err)
	}
	return nil
}

func decodeMap(r *mpReader, v mpValue, rv reflect.Value, path string) error {
	t := rv.Type()
	if t.Key().Kind() != reflect.String {
		return fmt.Errorf("%w: %s: no wire check for Go type %s", errWire, pathName(path), t)
	}
	if v.kind == mpNil {
		rv.SetZero()
		return nil
	}
	if v.kind != mpMap {
		return wrongKind(path, v, "a map")
	}
	// Each entry takes at least two bytes: the payload bounds the allocation.
	size := int(min(v.u, uint64(r.rest())))
	rv.Set(reflect.MakeMapWithSize(t, size))
	seen := make(map[string]struct{}, size)
	for range v.u {
		k, err := r.next()
		if err != nil {
			return fmt.Errorf("%s: %w", pathName(path), err)
		}
		if k.kind != mpStr {
			return wrongKind(pathName(path)+" key", k, "a string")
		}
		key := string(k.data)
		if _, dup := seen[key]; dup {
			return fmt.Errorf("%w: %s: key %s appears twice", errWire, pathName(path), quoteShort(key))
		}
		seen[key] = struct{}{}
		elem := reflect.New(t.Elem()).Elem()
		if err := decodeValue(r, elem, path+"["+quoteShort(key)+"]"); err != nil {
			return err
		}
		rv.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), elem)
	}
	return nil
}

// decodeTime reads the msgpack timestamp extension (-1) in its 32, 64 and 96 bit forms
// with nanoseconds below one second, as the spec requires.
func decodeTime(v mpValue, path string) (time.Time, error) {
	if v.kind != mpExt || v.ext != -1 {
		return time.Time{}, wrongKind(path, v, "a timestamp (extension -1)")
	}
	var sec, nsec uint64
	switch len(v.data) {
	case 4:
		sec = uint64(binary.BigEndian.Uint32(v.data))
	case 8:
		both := binary.BigEndian.Uint64(v.data)
		sec, nsec = both&(1<<34-1), both>>34
	case 12:
		nsec = uint64(binary.BigEndian.Uint32(v.data))
		sec = binary.BigEndian.Uint64(v.data[4:])
	default:
		return time.Time{}, fmt.Errorf("%w: %s: timestamp of %d bytes; allowed: 4, 8 or 12", errWire, pathName(path), len(v.data))
	}
	if nsec >= uint64(time.Second) {
		return time.Time{}, fmt.Errorf("%w: %s: timestamp with %d nanoseconds; allowed: 0-999999999", errWire, pathName(path), nsec)
	}
	tm := time.Unix(int64(sec), int64(nsec))
	if tm.IsZero() {
		tm = tm.UTC()
	}
	return tm, nil
}

func wrongKind(path string, v mpValue, want string) error {
	return fmt.Errorf("%w: %s: %s where %s is wanted", errWire, pathName(path), v.describe(), want)
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func pathName(path string) string {
	if path == "" {
		return "message"
	}
	return path
}
