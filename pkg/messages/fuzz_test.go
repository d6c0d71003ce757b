package messages_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// messagePtr is a pointer to a Message struct type T.
type messagePtr[T any] interface {
	*T
	messages.Message
}

// fuzzUnmarshal fuzzes Unmarshal into T, seeded with samples and the next-version
// fixtures. Properties: it never panics; every error wraps
// ErrMalformed; a decoded value passes Validate, re-encodes, and decodes again to an
// equal value; and it is the value the msgpack library decodes from the same bytes (the
// decoding Unmarshal replaced).
func fuzzUnmarshal[T any, P messagePtr[T]](f *testing.F) {
	for _, m := range samples() {
		if _, ok := m.(P); !ok {
			continue
		}
		data, err := messages.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// Records of a newer minor version: unknown fields at every level, unknown enums.
	next, err := filepath.Glob(filepath.Join("testdata", "next", "*.msgpack"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range next {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, seed := range [][]byte{
		{0xc0}, {0x80}, {0x90}, {0xc1}, {0xdd, 0xff, 0xff, 0xff, 0xff}, {0xdf, 0xff, 0xff, 0xff, 0xff},
		{0x81, 0xa6, 's', 'c', 'h', 'e', 'm', 'a', 0x02},
		{0x81, 0xa6, 's', 'c', 'h', 'e', 'm', 'a', 0x01},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var first T
		if err := messages.Unmarshal(data, P(&first)); err != nil {
			if !errors.Is(err, messages.ErrMalformed) {
				t.Fatalf("Unmarshal error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := P(&first).Validate(); err != nil {
			t.Fatalf("decoded %+v fails Validate: %v", first, err)
		}
		var lib T
		if err := msgpack.Unmarshal(data, &lib); err != nil {
			t.Fatalf("decoded %+v, but the msgpack library refuses the bytes: %v", first, err)
		}
		if !reflect.DeepEqual(first, lib) {
			t.Fatalf("Unmarshal and the msgpack library decode differently:\nours    %#v\nlibrary %#v", first, lib)
		}
		again, err := messages.Marshal(P(&first))
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", first, err)
		}
		var second T
		if err := messages.Unmarshal(again, P(&second)); err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", first, err)
		}
		if !reflect.DeepEqual(normalized(first), normalized(second)) {
			t.Fatalf("round trip changed the value:\nfirst  %#v\nsecond %#v", first, second)
		}
	})
}

func FuzzUnmarshalConfigEvent(f *testing.F) { fuzzUnmarshal[messages.ConfigEvent](f) }

func FuzzUnmarshalBarrier(f *testing.F) { fuzzUnmarshal[messages.Barrier](f) }

func FuzzUnmarshalAck(f *testing.F) { fuzzUnmarshal[messages.Ack](f) }

func FuzzUnmarshalCheckpointEvent(f *testing.F) { fuzzUnmarshal[messages.CheckpointEvent](f) }

func FuzzUnmarshalManifest(f *testing.F) { fuzzUnmarshal[messages.Manifest](f) }

func FuzzUnmarshalRegistration(f *testing.F) { fuzzUnmarshal[messages.Registration](f) }

func FuzzUnmarshalInstanceRecord(f *testing.F) { fuzzUnmarshal[messages.InstanceRecord](f) }

func FuzzUnmarshalCounter(f *testing.F) { fuzzUnmarshal[messages.Counter](f) }

func FuzzUnmarshalLease(f *testing.F) { fuzzUnmarshal[messages.Lease](f) }

func FuzzUnmarshalMemberEvent(f *testing.F) { fuzzUnmarshal[messages.MemberEvent](f) }

func FuzzUnmarshalAlarmEvent(f *testing.F) { fuzzUnmarshal[messages.AlarmEvent](f) }

// patchMsgpack encodes p as a msgpack set request.
func patchMsgpack(t *testing.T, p messages.ConfigPatch) []byte {
	t.Helper()
	m := map[string]any{}
	for name, d := range map[string]*time.Duration{messages.FieldInterval: p.Interval, messages.FieldTimeout: p.Timeout, messages.FieldMinPause: p.MinPause} {
		if d != nil {
			m[name] = d.String()
		}
	}
	for name, n := range map[string]*int{messages.FieldMaxConcurrent: p.MaxConcurrent, messages.FieldTolerableFailures: p.TolerableFailures, messages.FieldRetain: p.Retain} {
		if n != nil {
			m[name] = *n
		}
	}
	if p.ExpectedVersion != nil {
		m[messages.FieldExpectedVersion] = *p.ExpectedVersion
	}
	b, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkParsedPatch holds for every patch a parser accepts: it is valid, applies to the
// defaults, and both encodings of it parse back to an equal patch.
func checkParsedPatch(t *testing.T, p messages.ConfigPatch) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("accepted patch %+v fails Validate: %v", p, err)
	}
	if _, err := p.Apply(messages.DefaultConfig()); err != nil {
		t.Fatalf("accepted patch %+v does not apply to the defaults: %v", p, err)
	}
	js, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := messages.ParseConfigPatch(js)
	if err != nil {
		t.Fatalf("re-encoded %s does not parse: %v", js, err)
	}
	if !reflect.DeepEqual(fromJSON, p) {
		t.Fatalf("JSON round trip changed the patch: %+v → %s → %+v", p, js, fromJSON)
	}
	mp := patchMsgpack(t, p)
	fromMsgpack, err := messages.ParseConfigPatchMsgpack(mp)
	if err != nil {
		t.Fatalf("re-encoded msgpack % x does not parse: %v", mp, err)
	}
	if !reflect.DeepEqual(fromMsgpack, p) {
		t.Fatalf("msgpack round trip changed the patch: %+v → %+v", p, fromMsgpack)
	}
}

func FuzzParseConfigPatch(f *testing.F) {
	for _, s := range []string{
		`{"interval":"750ms"}`, `{"interval":"5m","timeout":"24h","min_pause":"0s","max_concurrent":16,"tolerable_failures":-1,"retain":100,"expected_version":7}`,
		`{"tolerable_failures":1e3}`, `{"max_concurrent":1.0}`, `{"retain":0.5e1}`, `{}`, `[]`, `"5s"`, `5`, ``, ` `, `null`,
		`{"interval":null}`, `{"interval":5}`, `{"interval":"5 parsecs"}`, `{"max_concurrent":1.5}`, `{"retain":1e400}`,
		`{"interval":"5s","interval":"6s"}`, `{"x":1}`, `{"interval":"1h1h"}`, `{"expected_version":9223372036854775807,"retain":1}`,
		`{"interval":"5s"} `, `{"interval":"\u0035s"}`, `{"interval":".5s"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := messages.ParseConfigPatch(body)
		if err != nil {
			if !errors.Is(err, messages.ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		checkParsedPatch(t, p)
	})
}

func FuzzParseConfigPatchMsgpack(f *testing.F) {
	for _, m := range []map[string]any{
		{"interval": "750ms"},
		{"interval": "5m", "timeout": "24h", "min_pause": "0s", "max_concurrent": 16, "tolerable_failures": -1, "retain": 100, "expected_version": uint64(7)},
		{"tolerable_failures": 1000.0}, {"retain": float32(2)}, {"retain": []byte("x")}, {"retain": nil},
		{"interval": time.Unix(1, 0)}, {"x": map[string]any{"y": []any{1, "z"}}}, {},
	} {
		b, err := msgpack.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, seed := range [][]byte{{}, {0xc0}, {0x90}, {0xc1}, {0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff}, {0x81, 0x01, 0x01}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := messages.ParseConfigPatchMsgpack(body)
		if err != nil {
			if !errors.Is(err, messages.ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		checkParsedPatch(t, p)
	})
}
