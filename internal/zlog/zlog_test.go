package zlog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/zlog"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name string
		log  func(*slog.Logger)
		want string
	}{
		{name: "fields", log: func(l *slog.Logger) {
			l.Warn("hello", "n", 3, "u", uint64(4), "ok", true, "error", errors.New("boom"), "d", 1500*time.Microsecond, "s", []string{"a", "b"})
		}, want: `{"level":"warn","n":3,"u":4,"ok":true,"error":"boom","d":1.5,"s":["a","b"],"message":"hello"}` + "\n"},
		{name: "with and group", log: func(l *slog.Logger) {
			l.With("job", "j").WithGroup("g").Info("hi", "k", "v")
		}, want: `{"level":"info","job":"j","g.k":"v","message":"hi"}` + "\n"},
		{name: "below the level", log: func(l *slog.Logger) { l.Debug("quiet") }, want: ""},
		{name: "error level", log: func(l *slog.Logger) { l.Error("bad") }, want: `{"level":"error","message":"bad"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(zlog.New(zerolog.New(&buf).Level(zerolog.InfoLevel)))
			if buf.String() != tt.want {
				t.Fatalf("got  %s\nwant %s", buf.String(), tt.want)
			}
		})
	}
}

// TestRateLimited: the report is a warning with the kind as its message and the count.
func TestRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		l := zlog.RateLimited(zerolog.New(&buf), time.Second)
		for range 5 {
			l.Allow("ack dropped: cannot decode")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		var line struct {
			Level      string `json:"level"`
			Message    string `json:"message"`
			Suppressed uint64 `json:"suppressed"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &line); err != nil {
			t.Fatalf("%q: %v", buf.String(), err)
		}
		if line.Level != "warn" || line.Message != "ack dropped: cannot decode" || line.Suppressed != 4 {
			t.Fatalf("report %+v, want a warning of 4 suppressed", line)
		}
	})
}
