package messages_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cairn-stream/cairn/pkg/messages"
)

func ptr[T any](v T) *T { return &v }

func TestParseConfigPatchAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want messages.ConfigPatch
	}{
		{"one duration", `{"interval":"750ms"}`, messages.ConfigPatch{Interval: ptr(750 * time.Millisecond)}},
		{"every field", `{"interval":"5m","timeout":"24h","min_pause":"0s","max_concurrent":16,"tolerable_failures":-1,"retain":100,"expected_version":7}`,
			messages.ConfigPatch{Interval: ptr(5 * time.Minute), Timeout: ptr(24 * time.Hour), MinPause: ptr(time.Duration(0)),
				MaxConcurrent: ptr(16), TolerableFailures: ptr(-1), Retain: ptr(100), ExpectedVersion: ptr(uint64(7))}},
		{"exponent is a whole number", `{"tolerable_failures":1e3}`, messages.ConfigPatch{TolerableFailures: ptr(1000)}},
		{"1.0 is a whole number", `{"max_concurrent":1.0}`, messages.ConfigPatch{MaxConcurrent: ptr(1)}},
		{"decimal exponent", `{"retain":0.5e1}`, messages.ConfigPatch{Retain: ptr(5)}},
		{"negative zero", `{"tolerable_failures":-0}`, messages.ConfigPatch{TolerableFailures: ptr(0)}},
		{"expected version as exponent", `{"retain":3,"expected_version":1E2}`, messages.ConfigPatch{Retain: ptr(3), ExpectedVersion: ptr(uint64(100))}},
		{"expected version zero", `{"retain":3,"expected_version":0}`, messages.ConfigPatch{Retain: ptr(3), ExpectedVersion: ptr(uint64(0))}},
		{"bounds", `{"interval":"100ms","timeout":"1s","min_pause":"24h"}`, messages.ConfigPatch{Interval: ptr(100 * time.Millisecond), Timeout: ptr(time.Second), MinPause: ptr(24 * time.Hour)}},
		{"compound duration", `{"interval":"1h30m"}`, messages.ConfigPatch{Interval: ptr(90 * time.Minute)}},
		{"whitespace around", " \n\t{ \"interval\" : \"2s\" }\r\n ", messages.ConfigPatch{Interval: ptr(2 * time.Second)}},
		{"escaped key", `{"\u0069nterval":"2s"}`, messages.ConfigPatch{Interval: ptr(2 * time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := messages.ParseConfigPatch([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParseConfigPatch(%s): %v", tc.body, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseConfigPatch(%s) = %+v, want %+v", tc.body, got, tc.want)
			}
		})
	}
}

func TestParseConfigPatchRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		msg  string
	}{
		{"empty", ``, "empty body; send a JSON object"},
		{"whitespace", " \n\t ", "empty body"},
		{"array", `[{"interval":"5s"}]`, "body is not a JSON object"},
		{"string", `"5s"`, "body is not a JSON object"},
		{"number", `5`, "body is not a JSON object"},
		{"null", `null`, "body is not a JSON object"},
		{"bad JSON", `{"interval":"5s"`, "body is not valid JSON: unexpected end of JSON input"},
		{"trailing comma", `{"interval":"5s",}`, "body is not valid JSON: invalid character '}' looking for beginning of object key string"},
		{"two objects", `{"interval":"5s"}{"retain":2}`, "body is not valid JSON: invalid character '{' after top-level value"},
		{"trailing garbage", `{"interval":"5s"} x`, "body is not valid JSON"},
		{"empty object", `{}`, "nothing to change; give at least one of interval, timeout, min_pause, max_concurrent, tolerable_failures, retain"},
		{"only expected_version", `{"expected_version":3}`, "nothing to change"},
		{"unknown field", `{"intervall":"5s"}`, `unknown field "intervall"; allowed fields: interval, timeout, min_pause, max_concurrent, tolerable_failures, retain, expected_version`},
		{"unknown fields sorted", `{"z":1,"a":2,"interval":"5s"}`, `unknown fields "a", "z"; allowed fields`},
		{"many unknown fields", `{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1}`, `unknown fields "a", "b", "c", "d", "e", and 2 more;`},
		{"case matters", `{"Interval":"5s"}`, `unknown field "Interval"`},
		{"repeated field", `{"interval":"5s","interval":"6s"}`, `field "interval" appears twice; give each field once`},
		{"null interval", `{"interval":null}`, `interval: null is not allowed; give a duration string such as "750ms", "10s" or "5m"`},
		{"null max_concurrent", `{"max_concurrent":null}`, "max_concurrent: null is not allowed; give a whole number from 1 to 16"},
		{"number for duration", `{"timeout":30}`, "timeout: a number is not a duration (the unit would be a guess)"},
		{"bool for duration", `{"min_pause":false}`, "min_pause: false is not allowed; give a duration string"},
		{"object for duration", `{"interval":{"s":5}}`, "interval: an object is not allowed"},
		{"bad duration", `{"interval":"5 parsecs"}`, `interval: "5 parsecs" is not a duration; give a duration string such as "750ms"`},
		{"duration without unit", `{"interval":"5"}`, `interval: "5" is not a duration`},
		{"long bad duration is cut", `{"interval":"` + strings.Repeat("x", 1000) + `"}`, `interval: "` + strings.Repeat("x", 64) + `"… is not a duration`},
		{"interval too small", `{"interval":"99ms"}`, "interval: 99ms is out of range; give a duration from 100ms to 24h"},
		{"interval too large", `{"interval":"24h0m0.001s"}`, "interval: 24h0m0.001s is out of range; give a duration from 100ms to 24h"},
		{"interval negative", `{"interval":"-1s"}`, "interval: -1s is out of range"},
		{"timeout too small", `{"timeout":"999ms"}`, "timeout: 999ms is out of range; give a duration from 1s to 24h"},
		{"min_pause negative", `{"min_pause":"-1ns"}`, "min_pause: -1ns is out of range; give a duration from 0s to 24h"},
		{"string for int", `{"max_concurrent":"2"}`, "max_concurrent: a string is not allowed; give a whole number from 1 to 16"},
		{"array for int", `{"retain":[3]}`, "retain: an array is not allowed; give a whole number from 1 to 100"},
		{"true for int", `{"retain":true}`, "retain: true is not allowed"},
		{"fraction", `{"max_concurrent":1.5}`, "max_concurrent: 1.5 is not a whole number; give a whole number from 1 to 16"},
		{"max_concurrent too large", `{"max_concurrent":17}`, "max_concurrent: 17 is out of range; give a whole number from 1 to 16"},
		{"max_concurrent zero", `{"max_concurrent":0}`, "max_concurrent: 0 is out of range"},
		{"tolerable_failures too small", `{"tolerable_failures":-2}`, "tolerable_failures: -2 is out of range; give a whole number from -1 to 1000"},
		{"tolerable_failures too large", `{"tolerable_failures":1001}`, "tolerable_failures: 1001 is out of range"},
		{"retain zero", `{"retain":0}`, "retain: 0 is out of range; give a whole number from 1 to 100"},
		{"huge number", `{"retain":1e400}`, "retain: 1e400 is out of range"},
		{"beyond int64", `{"retain":9223372036854775808}`, "retain: 9223372036854775808 is out of range"},
		{"negative expected_version", `{"retain":2,"expected_version":-1}`, "expected_version: -1 is out of range; give a whole number from 0 up"},
		{"fractional expected_version", `{"retain":2,"expected_version":0.5}`, "expected_version: 0.5 is not a whole number"},
		{"string expected_version", `{"retain":2,"expected_version":"3"}`, "expected_version: a string is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := messages.ParseConfigPatch([]byte(tc.body))
			if !errors.Is(err, messages.ErrBadRequest) {
				t.Fatalf("ParseConfigPatch(%s) = %v, want ErrBadRequest", tc.body, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ParseConfigPatch(%s) error\n%q\ndoes not contain\n%q", tc.body, err, tc.msg)
			}
		})
	}
}

func TestParseConfigPatchMsgpack(t *testing.T) {
	mp := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("accepts", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body []byte
			want messages.ConfigPatch
		}{
			{"strings and ints", mp(map[string]any{"interval": "2s", "max_concurrent": int8(2), "retain": uint64(7), "expected_version": uint32(3)}),
				messages.ConfigPatch{Interval: ptr(2 * time.Second), MaxConcurrent: ptr(2), Retain: ptr(7), ExpectedVersion: ptr(uint64(3))}},
			{"whole float", mp(map[string]any{"tolerable_failures": 1000.0}), messages.ConfigPatch{TolerableFailures: ptr(1000)}},
			{"whole float32", mp(map[string]any{"retain": float32(4)}), messages.ConfigPatch{Retain: ptr(4)}},
			{"negative int", mp(map[string]any{"tolerable_failures": int64(-1)}), messages.ConfigPatch{TolerableFailures: ptr(-1)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := messages.ParseConfigPatchMsgpack(tc.body)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			})
		}
	})
	t.Run("refuses", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body []byte
			msg  string
		}{
			{"empty", nil, "empty body; send a msgpack map"},
			{"not a map", mp([]any{"interval", "5s"}), "body is an array, not a msgpack map"},
			{"nil", mp(nil), "body is nil, not a msgpack map"},
			{"truncated", mp(map[string]any{"interval": "5s"})[:5], "body is not valid msgpack: msgpack: unexpected EOF"},
			{"trailing", append(mp(map[string]any{"interval": "5s"}), 0xc0), "1 trailing bytes after the msgpack map"},
			{"non-string key", mp(map[int]string{1: "5s"}), "map key is integer 1; keys must be strings"},
			{"binary string", mp(map[string]any{"interval": []byte("5s")}), "interval: binary data is not allowed; give a duration string"},
			{"nil value", mp(map[string]any{"retain": nil}), "retain: null is not allowed"},
			{"nested map", mp(map[string]any{"retain": map[string]any{"a": []any{1, 2}}}), "retain: a map is not allowed"},
			{"NaN", mp(map[string]any{"retain": math.NaN()}), "retain: NaN is not a whole number"},
			{"infinity", mp(map[string]any{"retain": math.Inf(1)}), "retain: +Inf is out of range"},
			{"fraction", mp(map[string]any{"max_concurrent": 1.5}), "max_concurrent: 1.5 is not a whole number"},
			{"huge uint", mp(map[string]any{"retain": uint64(math.MaxUint64)}), "retain: 18446744073709551615 is out of range"},
			{"timestamp", mp(map[string]any{"interval": time.Unix(5, 0)}), "interval: a msgpack extension (type -1) is not allowed"},
			{"number for duration", mp(map[string]any{"interval": 5}), "interval: a number is not a duration"},
			{"unknown field", mp(map[string]any{"x": []any{1}}), `unknown field "x"`},
			{"empty map", mp(map[string]any{}), "nothing to change"},
			{"out of range", mp(map[string]any{"interval": "1ms"}), "interval: 1ms is out of range; give a duration from 100ms to 24h"},
			{"huge array header (ran out of memory in the msgpack library)", []byte{0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff}, "body is not valid msgpack: msgpack: unexpected EOF"},
			{"huge map header (ran out of memory in the msgpack library)", []byte("\xdf,vn\xc2"), "body is not valid msgpack: msgpack: unexpected EOF"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := messages.ParseConfigPatchMsgpack(tc.body)
				if !errors.Is(err, messages.ErrBadRequest) {
					t.Fatalf("ParseConfigPatchMsgpack(% x) = %v, want ErrBadRequest", tc.body, err)
				}
				if !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("error\n%q\ndoes not contain\n%q", err, tc.msg)
				}
			})
		}
	})
}

func TestConfigPatchMarshalJSONRoundTrip(t *testing.T) {
	for _, body := range []string{
		`{"interval":"1h30m"}`,
		`{"interval":"100ms","timeout":"24h","min_pause":"0s","max_concurrent":1,"tolerable_failures":-1,"retain":100,"expected_version":9223372036854775807}`,
		`{"min_pause":"1.5s","expected_version":0}`,
	} {
		p, err := messages.ParseConfigPatch([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		js, err := p.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		again, err := messages.ParseConfigPatch(js)
		if err != nil {
			t.Fatalf("ParseConfigPatch(%s): %v", js, err)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("%s → %s → %+v, want %+v", body, js, again, p)
		}
	}
}

func TestConfigPatchApplyMerges(t *testing.T) {
	p, err := messages.ParseConfigPatch([]byte(`{"interval":"2s","retain":5}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Apply(messages.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := messages.DefaultConfig()
	want.Interval = 2 * time.Second
	want.Retain = 5
	if got != want {
		t.Fatalf("Apply = %+v, want %+v", got, want)
	}
	if _, err := (messages.ConfigPatch{}).Apply(messages.CheckpointConfig{}); !errors.Is(err, messages.ErrBadRequest) || !errors.Is(err, messages.ErrInvalidCheckpointConfig) {
		t.Fatalf("Apply onto an invalid config = %v, want ErrBadRequest and ErrInvalidConfig", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
	}{
		{"a", ""},
		{"A-z_09", ""},
		{strings.Repeat("x", 64), ""},
		{"", "job name is empty; allowed: 1-64 characters from [A-Za-z0-9_-]"},
		{strings.Repeat("x", 65), "job name is 65 characters long; allowed: 1-64"},
		{"a.b", `job name "a.b" has '.' at byte 1`},
		{"a$b", `job name "a$b" has '$' at byte 1`},
		{"*", `has '*' at byte 0`},
		{"a b", `has ' ' at byte 1`},
		{"ü", `has 'ü' at byte 0`},
		{"a\xff", `has byte 0xff at byte 1`},
	} {
		err := messages.ValidateName("job", tc.name)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("ValidateName(%q) = %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, messages.ErrInvalidName) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName containing %q", tc.name, err, tc.msg)
		}
	}
}

func TestConfigValidateNamesFieldAndRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*messages.CheckpointConfig)
		msg  string
	}{
		{"defaults", func(*messages.CheckpointConfig) {}, ""},
		{"interval", func(c *messages.CheckpointConfig) { c.Interval = 25 * time.Hour }, "interval 25h is out of range; allowed: 100ms to 24h"},
		{"timeout", func(c *messages.CheckpointConfig) { c.Timeout = 0 }, "timeout 0s is out of range; allowed: 1s to 24h"},
		{"min_pause", func(c *messages.CheckpointConfig) { c.MinPause = 90 * time.Minute * 20 }, "min_pause 30h is out of range; allowed: 0s to 24h"},
		{"max_concurrent", func(c *messages.CheckpointConfig) { c.MaxConcurrent = 0 }, "max_concurrent 0 is out of range; allowed: 1 to 16"},
		{"tolerable_failures", func(c *messages.CheckpointConfig) { c.TolerableFailures = -2 }, "tolerable_failures -2 is out of range; allowed: -1 to 1000"},
		{"retain", func(c *messages.CheckpointConfig) { c.Retain = 101 }, "retain 101 is out of range; allowed: 1 to 100"},
	} {
		c := messages.DefaultConfig()
		tc.edit(&c)
		err := c.Validate()
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, messages.ErrInvalidCheckpointConfig) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig containing %q", tc.name, err, tc.msg)
		}
	}
}

func TestEnumNames(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{messages.AckDone.String(), "ack"},
		{messages.AckDeclined.String(), "decline"},
		{messages.AckKind(9).String(), "AckKind(9)"},
		{messages.Completed.String(), "completed"},
		{messages.Aborted.String(), "aborted"},
		{messages.Outcome(0).String(), "Outcome(0)"},
		{messages.AbortTimeout.String(), "timeout"},
		{messages.AbortStorage.String(), "storage_error"},
		{messages.AbortCoordinatorChange.String(), "coordinator_change"},
		{messages.AbortStorageFull.String(), "storage_full"},
		{messages.AbortReason(8).String(), "AbortReason(8)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for r := messages.AbortTimeout; r <= messages.AbortStorageFull; r++ {
		want := r == messages.AbortTimeout || r == messages.AbortDeclined || r == messages.AbortStorage || r == messages.AbortStorageFull
		if r.Counted() != want {
			t.Errorf("%s.Counted() = %v, want %v", r, r.Counted(), want)
		}
	}
}
