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

	"github.com/vmihailenco/msgpack/v5"
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

var patchFields = []string{FieldInterval, FieldTimeout, FieldMinPause, FieldMaxConcurrent, FieldTolerableFailures, FieldRetain, FieldExpectedVersion}

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

// ParseConfigPatch parses a JSON set request strictly: the body must be a JSON object
// with at least one config field, no unknown fields, no nulls, durations as strings and
// counts as whole numbers. Errors wrap ErrBadRequest and say what is allowed.
func ParseConfigPatch(body []byte) (ConfigPatch, error) {
	var p ConfigPatch
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return p, fmt.Errorf("%w: empty body; send a JSON object such as {\"interval\":\"5s\"}", ErrBadRequest)
	}
	if trimmed[0] != '{' {
		return p, fmt.Errorf("%w: body is not a JSON object; send one such as {\"interval\":\"5s\"}", ErrBadRequest)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil {
		return p, fmt.Errorf("%w: body is not valid JSON: %w", ErrBadRequest, err)
	}
	var unknown []string
	for k := range fields {
		if !slices.Contains(patchFields, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return p, fmt.Errorf("%w: unknown field %s; allowed fields: %s", ErrBadRequest, strings.Join(unknown, ", "), strings.Join(patchFields, ", "))
	}
	var err error
	if p.Interval, err = durationField(fields, FieldInterval); err != nil {
		return p, err
	}
	if p.Timeout, err = durationField(fields, FieldTimeout); err != nil {
		return p, err
	}
	if p.MinPause, err = durationField(fields, FieldMinPause); err != nil {
		return p, err
	}
	if p.MaxConcurrent, err = intField(fields, FieldMaxConcurrent, MinMaxConcurrent, MaxMaxConcurrent); err != nil {
		return p, err
	}
	if p.TolerableFailures, err = intField(fields, FieldTolerableFailures, MinTolerableFailures, MaxTolerableFailures); err != nil {
		return p, err
	}
	if p.Retain, err = intField(fields, FieldRetain, MinRetain, MaxRetain); err != nil {
		return p, err
	}
	ev, err := intField(fields, FieldExpectedVersion, 0, math.MaxInt)
	if err != nil {
		return p, err
	}
	if ev != nil {
		v := uint64(*ev)
		p.ExpectedVersion = &v
	}
	if p.empty() {
		return p, fmt.Errorf("%w: nothing to change; give at least one of %s", ErrBadRequest, strings.Join(patchFields[:len(patchFields)-1], ", "))
	}
	return p, nil
}

// ParseConfigPatchMsgpack parses a msgpack set request (a map with the same keys and value
// forms as the JSON one) with the same rules as ParseConfigPatch.
func ParseConfigPatchMsgpack(body []byte) (ConfigPatch, error) {
	if len(body) == 0 {
		return ConfigPatch{}, fmt.Errorf("%w: empty body; send a msgpack map such as {\"interval\":\"5s\"}", ErrBadRequest)
	}
	r := bytes.NewReader(body)
	var m map[string]any
	if err := msgpack.NewDecoder(r).Decode(&m); err != nil || m == nil || r.Len() != 0 {
		return ConfigPatch{}, fmt.Errorf("%w: body is not a msgpack map with string keys", ErrBadRequest)
	}
	js, err := json.Marshal(m)
	if err != nil {
		return ConfigPatch{}, fmt.Errorf("%w: msgpack body holds a value with no JSON form: %w", ErrBadRequest, err)
	}
	return ParseConfigPatch(js)
}

func (p ConfigPatch) empty() bool {
	return p.Interval == nil && p.Timeout == nil && p.MinPause == nil && p.MaxConcurrent == nil &&
		p.TolerableFailures == nil && p.Retain == nil
}

// Apply merges the patch into c and validates the result; errors wrap ErrBadRequest.
func (p ConfigPatch) Apply(c Config) (Config, error) {
	if p.Interval != nil {
		c.Interval = *p.Interval
	}
	if p.Timeout != nil {
		c.Timeout = *p.Timeout
	}
	if p.MinPause != nil {
		c.MinPause = *p.MinPause
	}
	if p.MaxConcurrent != nil {
		c.MaxConcurrent = *p.MaxConcurrent
	}
	if p.TolerableFailures != nil {
		c.TolerableFailures = *p.TolerableFailures
	}
	if p.Retain != nil {
		c.Retain = *p.Retain
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return c, nil
}

const durationForm = `a duration string such as "750ms", "10s" or "5m"`

func durationField(fields map[string]json.RawMessage, name string) (*time.Duration, error) {
	raw, ok := fields[name]
	if !ok {
		return nil, nil
	}
	switch kind := jsonKind(raw); kind {
	case "string":
	case "number":
		return nil, fmt.Errorf("%w: %s: a number is not a duration (the unit would be a guess); give %s", ErrBadRequest, name, durationForm)
	default:
		return nil, fmt.Errorf("%w: %s: %s is not allowed; give %s", ErrBadRequest, name, kind, durationForm)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadRequest, name, err)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %q is not a duration; give %s", ErrBadRequest, name, s, durationForm)
	}
	return &d, nil
}

func intField(fields map[string]json.RawMessage, name string, lo, hi int) (*int, error) {
	raw, ok := fields[name]
	if !ok {
		return nil, nil
	}
	rangeMsg := fmt.Sprintf("a whole number from %d to %d", lo, hi)
	if hi == math.MaxInt {
		rangeMsg = fmt.Sprintf("a whole number from %d up", lo)
	}
	if kind := jsonKind(raw); kind != "number" {
		return nil, fmt.Errorf("%w: %s: %s is not allowed; give %s", ErrBadRequest, name, kind, rangeMsg)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(raw), 64)
		switch {
		case ferr == nil && f != math.Trunc(f):
			return nil, fmt.Errorf("%w: %s: %s is not a whole number; give %s", ErrBadRequest, name, raw, rangeMsg)
		case ferr == nil && f >= math.MinInt64 && f < math.MaxInt64:
			n = int64(f)
		default:
			return nil, fmt.Errorf("%w: %s: %s is out of range; give %s", ErrBadRequest, name, raw, rangeMsg)
		}
	}
	if n < int64(lo) || n > int64(hi) {
		return nil, fmt.Errorf("%w: %s: %d is out of range; give %s", ErrBadRequest, name, n, rangeMsg)
	}
	v := int(n)
	return &v, nil
}

// jsonKind names the JSON type of a raw value as a user would: "string", "number",
// "null", "true", "false", "an object", "an array".
func jsonKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "an empty value"
	}
	switch raw[0] {
	case '"':
		return "string"
	case 'n':
		return "null"
	case 't':
		return "true"
	case 'f':
		return "false"
	case '{':
		return "an object"
	case '[':
		return "an array"
	default:
		return "number"
	}
}
