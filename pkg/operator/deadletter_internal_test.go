package operator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// testRuntime is a Runtime with what deadLetterMsg reads.
func testRuntime() *Runtime {
	return &Runtime{cfg: DefaultConfig("orders", "counter-0").withDefaults(), incarnation: "inc1"}
}

// wireSize is m's size as nats.go puts it on the wire: payload and encoded headers.
func wireSize(t testing.TB, m *nats.Msg) int64 {
	t.Helper()
	return int64(m.Size() - len(m.Subject) - len(m.Reply))
}

// TestDeadLetterMsg: a dead letter holds the whole record when it fits, and otherwise
// drops the record's headers, then the end of its payload, saying so, and always fits
// the limit it is given; its size estimate is nats.go's.
func TestDeadLetterMsg(t *testing.T) {
	r := testRuntime()
	fail := &recordFailure{reason: messages.PoisonPanic, err: errors.New("panic in Apply: boom\ngoroutine 1 [running]:")}
	header := nats.Header{"Trace-Id": {"t-7"}, "Nats-Msg-Id": {"in-1"}, "Cairn-Deadletter-Reason": {"forged"}}
	tests := []struct {
		name       string
		data       []byte
		header     nats.Header
		max        int64
		truncated  string
		keepHeader bool
	}{
		{name: "fits", data: []byte("small"), header: header, max: 1 << 20, keepHeader: true},
		{name: "headers dropped", data: bytes.Repeat([]byte("a"), 400), header: nats.Header{"Big": {strings.Repeat("h", 600)}}, max: 1200,
			truncated: "headers dropped"},
		{name: "payload cut", data: bytes.Repeat([]byte("b"), 4000), max: 2000, truncated: "payload: "},
		{name: "both", data: bytes.Repeat([]byte("c"), 4000), header: header, max: 2000, truncated: "headers dropped; payload: "},
		{name: "headers over JetStream's limit", data: []byte("d"), header: nats.Header{"Huge": {strings.Repeat("h", maxHeaderBytes)}}, max: 1 << 20,
			truncated: "headers dropped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := Record{Subject: "cairn.input.orders.counter-0", Data: tt.data, Header: tt.header, Sequence: 42}
			m, truncated := r.deadLetterMsg(rec, fail, tt.max)
			if got := headerSize(m.Header) + len(m.Data); int64(got) != wireSize(t, m) {
				t.Fatalf("size estimate %d, nats.go's %d", got, wireSize(t, m))
			}
			if wireSize(t, m) > tt.max || headerSize(m.Header) > maxHeaderBytes {
				t.Fatalf("dead letter of %d bytes (%d of headers), limit %d", wireSize(t, m), headerSize(m.Header), tt.max)
			}
			if !strings.HasPrefix(truncated, tt.truncated) || (tt.truncated == "") != (truncated == "") || m.Header.Get(messages.HeaderDeadLetterTruncated) != truncated {
				t.Fatalf("truncated %q (header %q), want it to start with %q", truncated, m.Header.Get(messages.HeaderDeadLetterTruncated), tt.truncated)
			}
			if !bytes.HasPrefix(tt.data, m.Data) || strings.Contains(truncated, "payload") == (len(m.Data) == len(tt.data)) {
				t.Fatalf("payload of %d bytes of %d, truncated %q", len(m.Data), len(tt.data), truncated)
			}
			if strings.Contains(truncated, "payload") && !strings.HasSuffix(truncated, fmt.Sprintf("payload: %d of %d bytes kept", len(m.Data), len(tt.data))) {
				t.Fatalf("truncated %q does not say %d of %d bytes kept", truncated, len(m.Data), len(tt.data))
			}
			if got := m.Header.Get("Trace-Id") == "t-7"; got != tt.keepHeader && tt.header != nil && tt.header.Get("Trace-Id") != "" {
				t.Fatalf("record header kept: %v, want %v", got, tt.keepHeader)
			}
			for k, want := range map[string]string{
				jetstream.MsgIDHeader:             "orders.counter-0.42",
				messages.HeaderDeadLetterSequence: "42",
				messages.HeaderDeadLetterReason:   "panic",
				messages.HeaderDeadLetterError:    "panic in Apply: boom goroutine 1 [running]:",
				messages.HeaderDeadLetterSize:     fmt.Sprint(len(tt.data)),
			} {
				if got := m.Header.Values(k); len(got) != 1 || got[0] != want {
					t.Fatalf("header %s = %q, want [%q]", k, got, want)
				}
			}
		})
	}
}

// FuzzDeadLetterMsg: whatever the record and the limit (above what the dead letter's own
// headers need), the dead letter fits it, keeps a prefix of the payload, and says when it
// is cut.
func FuzzDeadLetterMsg(f *testing.F) {
	f.Add([]byte("data"), "Trace-Id", "v", "boom", int64(1<<20))
	f.Add(bytes.Repeat([]byte("x"), 3000), "K", strings.Repeat("v", 900), strings.Repeat("e\n", 3000), int64(2000))
	r := testRuntime()
	f.Fuzz(func(t *testing.T, data []byte, key, value, errText string, max int64) {
		if max < 8<<10 || max > 1<<24 {
			t.Skip()
		}
		rec := Record{Subject: "s.x", Data: data, Header: nats.Header{key: {value}}, Sequence: 7}
		m, truncated := r.deadLetterMsg(rec, &recordFailure{reason: messages.PoisonPanic, err: errors.New(errText)}, max)
		if got := int64(headerSize(m.Header) + len(m.Data)); got != wireSize(t, m) || got > max || headerSize(m.Header) > maxHeaderBytes {
			t.Fatalf("dead letter of %d bytes (nats.go: %d), limit %d", got, wireSize(t, m), max)
		}
		if !bytes.HasPrefix(data, m.Data) || (len(m.Data) < len(data)) != strings.Contains(truncated, "payload") {
			t.Fatalf("payload %d of %d bytes, truncated %q", len(m.Data), len(data), truncated)
		}
		if !headerKeyValid(key) && !strings.HasPrefix(truncated, "headers dropped") {
			t.Fatalf("header %q that nats.go does not publish kept, truncated %q", key, truncated)
		}
		if len(m.Header.Get(messages.HeaderDeadLetterError)) > messages.MaxDeadLetterError {
			t.Fatalf("error header of %d bytes", len(m.Header.Get(messages.HeaderDeadLetterError)))
		}
	})
}

// TestRefusal: only failures that are permanent for the message end the retries; an
// outage, a missing stream or a full store are retried whatever the attempt.
func TestRefusal(t *testing.T) {
	api := func(code int, errCode jetstream.ErrorCode) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: "x"})
	}
	tests := []struct {
		name    string
		err     error
		attempt int
		want    messages.PoisonReason // "" means retried
	}{
		{name: "max payload", err: nats.ErrMaxPayload, attempt: 1, want: messages.PoisonOutputTooLarge},
		{name: "stream max message size", err: api(400, errCodeMsgTooLarge), attempt: 1, want: messages.PoisonOutputTooLarge},
		{name: "headers too large", err: api(400, errCodeHeadersTooLarge), attempt: 1, want: messages.PoisonOutputTooLarge},
		{name: "bad subject", err: nats.ErrBadSubject, attempt: 1, want: messages.PoisonOutputRefused},
		{name: "client error, first attempts", err: api(400, 10109), attempt: maxRefusals - 1},
		{name: "client error, too often", err: api(400, 10109), attempt: maxRefusals, want: messages.PoisonOutputRefused},
		{name: "storage full", err: api(503, 10077), attempt: 100},
		{name: "cluster unavailable", err: api(503, 10008), attempt: 100},
		{name: "no stream", err: jetstream.ErrNoStreamResponse, attempt: 100},
		{name: "timeout", err: fmt.Errorf("publish: %w", context.DeadlineExceeded), attempt: 100},
		{name: "disconnected", err: nats.ErrReconnectBufExceeded, attempt: 100},
		{name: "connection closed", err: nats.ErrConnectionClosed, attempt: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := refusal(tt.err, tt.attempt)
			f, ok := errors.AsType[*recordFailure](err)
			switch {
			case tt.want == "" && ok:
				t.Fatalf("refusal = %v, want it retried", err)
			case tt.want != "" && (!ok || f.reason != tt.want):
				t.Fatalf("refusal = %v, want a record failure %s", err, tt.want)
			case !errors.Is(err, tt.err):
				t.Fatalf("refusal = %v, does not wrap %v", err, tt.err)
			}
		})
	}
}
