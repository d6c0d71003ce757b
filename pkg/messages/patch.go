package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrBadRequest is returned (wrapped) for a config request that cannot be accepted as sent;
// the wrapping message names the field and what is allowed. It maps to code 400.
var ErrBadRequest = errors.New("bad request")

// Config field names as they are spelled in requests and replies.
const (
	FieldInterval          = "interval"
	FieldTimeout           = "timeout"
	FieldMinPause          = "min_pause"
	FieldMaxConcurrent     = "max_concurrent"
	FieldTolerableFailures = "tolerable_failures"
	FieldRetain            = "retain"
	FieldExpectedVersion   = "expected_version"
)

// patchFields are the fields a set request may give: the config's, then expected_version.
var patchFields = func() []string {
	names := make([]string, 0, len(configFields)+1)
	for _, f := range configFields {
		names = append(names, f.name())
	}
	return append(names, FieldExpectedVersion)
}()

// ConfigPatch is a parsed set request: a merge patch on the config in force. Nil fields
// keep their current value.
type ConfigPatch struct {
	Interval          *time.Duration
	Timeout           *time.Duration
	MinPause          *time.Duration
	MaxConcurrent     *int
	TolerableFailures *int
	Retain            *int
	// ExpectedVersion, when set, makes the change conditional on the current version.
	ExpectedVersion *uint64
}

// ParseConfigPatch parses a JSON set request strictly: the body must be one JSON object
// with at least one config field, no unknown or repeated fields, no nulls, durations as
// strings, counts as whole numbers (1e3 and 1.0 are whole numbers), every value in its
// allowed range. Errors wrap ErrBadRequest and say what is allowed.
func ParseConfigPatch(body []byte) (ConfigPatch, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return ConfigPatch{}, fmt.Errorf("%w: empty body; send a JSON object such as {\"interval\":\"5s\"}", ErrBadRequest)
	}
	if trimmed[0] != '{' {
		return ConfigPatch{}, fmt.Errorf("%w: body is not a JSON object; send one such as {\"interval\":\"5s\"}", ErrBadRequest)
	}
	if err := json.Unmarshal(trimmed, &struct{}{}); err != nil {
		return ConfigPatch{}, fmt.Errorf("%w: body is not valid JSON: %w", ErrBadRequest, err)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return ConfigPatch{}, fmt.Errorf("%w: body is not valid JSON: %w", ErrBadRequest, err)
	}
	fields := make(map[string]patchValue)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ConfigPatch{}, fmt.Errorf("%w: body is not valid JSON: %w", ErrBadRequest, err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return ConfigPatch{}, fmt.Errorf("%w: body is not valid JSON: %w", ErrBadRequest, err)
		}
		if _, dup := fields[key]; dup {
			return ConfigPatch{}, fmt.Errorf("%w: field %s appears twice; give each field once", ErrBadRequest, quoteShort(key))
		}
		if fields[key], err = jsonValue(raw); err != nil {
			return ConfigPatch{}, fmt.Errorf("%w: %s: %w", ErrBadRequest, quoteShort(key), err)
		}
	}
	return parseFields(fields)
}

// ParseConfigPatchMsgpack parses a msgpack set request, a map with the same keys and value
// forms as the JSON one, with the same rules as ParseConfigPatch. Strings must be msgpack
// str (not bin); integers and floats count as numbers.
func ParseConfigPatchMsgpack(body []byte) (ConfigPatch, error) {
	if len(body) == 0 {
		return ConfigPatch{}, fmt.Errorf("%w: empty body; send a msgpack map such as {\"interval\":\"5s\"}", ErrBadRequest)
	}
	r := mpReader{b: body}
	top, err := r.next()
	if err != nil {
		return ConfigPatch{}, fmt.Errorf("%w: body is not valid msgpack: %w", ErrBadRequest, err)
	}
	if top.kind != mpMap {
		return ConfigPatch{}, fmt.Errorf("%w: body is %s, not a msgpack map; send one such as {\"interval\":\"5s\"}", ErrBadRequest, top.describe())
	}
	fields := make(map[string]patchValue)
	for range top.u {
		k, err := r.next()
		if err != nil {
			return ConfigPatch{}, fmt.Errorf("%w: body is not valid msgpack: %w", ErrBadRequest, err)
		}
		if k.kind != mpStr {
			return ConfigPatch{}, fmt.Errorf("%w: map key is %s; keys must be strings (field names)", ErrBadRequest, k.describe())
		}
		key := string(k.data)
		v, err := r.next()
		if err == nil {
			err = r.skipElements(v, math.MaxInt)
		}
		if err != nil {
			return ConfigPatch{}, fmt.Errorf("%w: body is not valid msgpack: %w", ErrBadRequest, err)
		}
		if _, dup := fields[key]; dup {
			return ConfigPatch{}, fmt.Errorf("%w: field %s appears twice; give each field once", ErrBadRequest, quoteShort(key))
		}
		fields[key] = msgpackValue(v)
	}
	if r.rest() != 0 {
		return ConfigPatch{}, fmt.Errorf("%w: %d trailing bytes after the msgpack map", ErrBadRequest, r.rest())
	}
	return parseFields(fields)
}

// MarshalJSON encodes the patch as the JSON body of a set request, with only the fields
// that are set; ParseConfigPatch parses it back to an equal patch.
func (p ConfigPatch) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	add := func(name, value string) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(name))
		b.WriteByte(':')
		b.WriteString(value)
	}
	for _, f := range configFields {
		if f.set(p) {
			add(f.name(), f.json(p))
		}
	}
	if p.ExpectedVersion != nil {
		add(FieldExpectedVersion, strconv.FormatUint(*p.ExpectedVersion, 10))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Validate reports the first field of the patch that is out of its allowed range, naming
// the field and the range; errors wrap ErrBadRequest. Fields not set are not checked.
func (p ConfigPatch) Validate() error {
	for _, f := range configFields {
		if err := f.checkPatch(p); err != nil {
			return err
		}
	}
	return nil
}

func (p ConfigPatch) empty() bool {
	for _, f := range configFields {
		if f.set(p) {
			return false
		}
	}
	return true
}

// Apply merges the patch into c and validates the result; errors wrap ErrBadRequest.
func (p ConfigPatch) Apply(c CheckpointConfig) (CheckpointConfig, error) {
	for _, f := range configFields {
		f.apply(p, &c)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return c, nil
}

// patchValue is one field value of a set request as sent, in either encoding.
type patchValue struct {
	// kind names the value's type as a user would: "a string", "a number", "null",
	// "true", "false", "an object", "an array", …
	kind string
	// text is a string's value or a number's literal.
	text string
}

const (
	kindString = "a string"
	kindNumber = "a number"
)

// jsonValue classifies a JSON value that json.Decoder has already checked.
func jsonValue(raw json.RawMessage) (patchValue, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return patchValue{kind: "an empty value"}, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return patchValue{}, err
		}
		return patchValue{kind: kindString, text: s}, nil
	case 'n':
		return patchValue{kind: "null"}, nil
	case 't':
		return patchValue{kind: "true"}, nil
	case 'f':
		return patchValue{kind: "false"}, nil
	case '{':
		return patchValue{kind: "an object"}, nil
	case '[':
		return patchValue{kind: "an array"}, nil
	}
	return patchValue{kind: kindNumber, text: string(raw)}, nil
}

// msgpackValue classifies a msgpack value read by mpReader.
func msgpackValue(v mpValue) patchValue {
	switch v.kind {
	case mpStr:
		return patchValue{kind: kindString, text: string(v.data)}
	case mpInt:
		return patchValue{kind: kindNumber, text: v.intText()}
	case mpFloat:
		return patchValue{kind: kindNumber, text: v.floatText()}
	case mpNil:
		return patchValue{kind: "null"}
	case mpExt:
		return patchValue{kind: fmt.Sprintf("a msgpack extension (type %d)", v.ext)}
	}
	return patchValue{kind: v.describe()}
}

// parseFields turns the fields of a set request into a patch, checking names, forms and
// ranges in a fixed order so that the same request always gets the same answer.
func parseFields(fields map[string]patchValue) (ConfigPatch, error) {
	var p ConfigPatch
	var unknown []string
	for k := range fields {
		if !slices.Contains(patchFields, k) {
			unknown = append(unknown, quoteShort(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		noun := "field"
		if len(unknown) > 1 {
			noun = "fields"
		}
		if len(unknown) > maxListed {
			unknown = append(unknown[:maxListed], fmt.Sprintf("and %d more", len(unknown)-maxListed))
		}
		return p, fmt.Errorf("%w: unknown %s %s; allowed fields: %s", ErrBadRequest, noun, strings.Join(unknown, ", "), strings.Join(patchFields, ", "))
	}
	for _, f := range configFields {
		if v, ok := fields[f.name()]; ok {
			if err := f.parse(&p, v); err != nil {
				return p, err
			}
		}
	}
	if v, ok := fields[FieldExpectedVersion]; ok {
		i, err := wholeNumber(FieldExpectedVersion, v, 0, math.MaxInt64)
		if err != nil {
			return p, err
		}
		ev := uint64(i)
		p.ExpectedVersion = &ev
	}
	if p.empty() {
		return p, fmt.Errorf("%w: nothing to change; give at least one of %s", ErrBadRequest, strings.Join(patchFields[:len(patchFields)-1], ", "))
	}
	return p, nil
}

const durationForm = `a duration string such as "750ms", "10s" or "5m"`

func durationValue(name string, v patchValue) (time.Duration, error) {
	switch v.kind {
	case kindString:
	case kindNumber:
		return 0, fmt.Errorf("%w: %s: a number is not a duration (the unit would be a guess); give %s", ErrBadRequest, name, durationForm)
	default:
		return 0, fmt.Errorf("%w: %s: %s is not allowed; give %s", ErrBadRequest, name, v.kind, durationForm)
	}
	d, err := time.ParseDuration(v.text)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %s is not a duration; give %s", ErrBadRequest, name, quoteShort(v.text), durationForm)
	}
	return d, nil
}

// wholeNumber reads a number field that must be a whole number from lo to hi; 1e3 and
// 1.0 are whole numbers.
func wholeNumber(name string, v patchValue, lo, hi int64) (int64, error) {
	form := wholeNumberForm(lo, hi)
	if v.kind != kindNumber {
		return 0, fmt.Errorf("%w: %s: %s is not allowed; give %s", ErrBadRequest, name, v.kind, form)
	}
	n, err := strconv.ParseInt(v.text, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(v.text, 64)
		switch {
		case ferr == nil && f != math.Trunc(f):
			return 0, fmt.Errorf("%w: %s: %s is not a whole number; give %s", ErrBadRequest, name, short(v.text), form)
		case ferr == nil && f >= math.MinInt64 && f < math.MaxInt64:
			n = int64(f)
		default:
			return 0, fmt.Errorf("%w: %s: %s is out of range; give %s", ErrBadRequest, name, short(v.text), form)
		}
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s: %d is out of range; give %s", ErrBadRequest, name, n, form)
	}
	return n, nil
}

func wholeNumberForm(lo, hi int64) string {
	if hi == math.MaxInt64 {
		return fmt.Sprintf("a whole number from %d up", lo)
	}
	return fmt.Sprintf("a whole number from %d to %d", lo, hi)
}

// maxListed is how many unknown field names an error lists; maxEcho is how many bytes of
// a value sent by the client an error repeats, so that a huge request cannot make a
// huge error reply.
const (
	maxListed = 5
	maxEcho   = 64
)

// short returns s, cut to maxEcho bytes (on a rune boundary) and marked with "…" when
// longer.
func short(s string) string {
	if cut, more := cutEcho(s); more {
		return cut + "…"
	}
	return s
}

// quoteShort quotes s as a Go string literal, cut like short.
func quoteShort(s string) string {
	cut, more := cutEcho(s)
	if more {
		return strconv.Quote(cut) + "…"
	}
	return strconv.Quote(s)
}

func cutEcho(s string) (string, bool) {
	if len(s) <= maxEcho {
		return s, false
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut], true
}
