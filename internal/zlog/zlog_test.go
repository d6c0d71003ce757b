package zlog_test

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
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
