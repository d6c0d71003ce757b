package zlog

import (
	"context"
	"log/slog"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/lograte"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// New returns a *slog.Logger that writes through l, at l's level.
func New(l zerolog.Logger) *slog.Logger { return slog.New(&Handler{log: l}) }

// Handler is a slog.Handler writing each record through a zerolog.Logger: the slog
// levels Debug, Info, Warn and Error map to zerolog's, the message to zerolog's message
// field, attributes to fields of the same kind (an error value to an error field), and a
// group's attributes to fields named "group.key".
type Handler struct {
	log    zerolog.Logger
	prefix string
}

var _ slog.Handler = (*Handler)(nil)

// level maps a slog level to zerolog's: below Info is debug, below Warn info, below Error
// warn, the rest error.
func level(l slog.Level) zerolog.Level {
	switch {
	case l < slog.LevelInfo:
		return zerolog.DebugLevel
	case l < slog.LevelWarn:
		return zerolog.InfoLevel
	case l < slog.LevelError:
		return zerolog.WarnLevel
	default:
		return zerolog.ErrorLevel
	}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	lvl := level(l)
	return lvl >= h.log.GetLevel() && lvl >= zerolog.GlobalLevel()
}

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	ev := h.log.WithLevel(level(r.Level))
	if ev == nil {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(ev, h.prefix, a)
		return true
	})
	ev.Msg(r.Message)
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	ctx := h.log.With()
	for _, a := range attrs {
		ctx = addContext(ctx, h.prefix, a)
	}
	return &Handler{log: ctx.Logger(), prefix: h.prefix}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{log: h.log, prefix: h.prefix + name + "."}
}

// fields is what zerolog.Event and zerolog.Context have in common, written as adders so
// that one switch serves both.
type fields struct {
	str  func(k, v string)
	i64  func(k string, v int64)
	u64  func(k string, v uint64)
	f64  func(k string, v float64)
	b    func(k string, v bool)
	dur  func(k string, v time.Duration)
	tm   func(k string, v time.Time)
	err  func(k string, v error)
	any  func(k string, v any)
	strs func(k string, v []string)
}

func addField(ev *zerolog.Event, prefix string, a slog.Attr) {
	add(fields{
		str: func(k, v string) { ev.Str(k, v) }, i64: func(k string, v int64) { ev.Int64(k, v) },
		u64: func(k string, v uint64) { ev.Uint64(k, v) }, f64: func(k string, v float64) { ev.Float64(k, v) },
		b: func(k string, v bool) { ev.Bool(k, v) }, dur: func(k string, v time.Duration) { ev.Dur(k, v) },
		tm: func(k string, v time.Time) { ev.Time(k, v) }, err: func(k string, v error) { ev.AnErr(k, v) },
		any: func(k string, v any) { ev.Interface(k, v) }, strs: func(k string, v []string) { ev.Strs(k, v) },
	}, prefix, a)
}

func addContext(ctx zerolog.Context, prefix string, a slog.Attr) zerolog.Context {
	add(fields{
		str: func(k, v string) { ctx = ctx.Str(k, v) }, i64: func(k string, v int64) { ctx = ctx.Int64(k, v) },
		u64: func(k string, v uint64) { ctx = ctx.Uint64(k, v) }, f64: func(k string, v float64) { ctx = ctx.Float64(k, v) },
		b: func(k string, v bool) { ctx = ctx.Bool(k, v) }, dur: func(k string, v time.Duration) { ctx = ctx.Dur(k, v) },
		tm: func(k string, v time.Time) { ctx = ctx.Time(k, v) }, err: func(k string, v error) { ctx = ctx.AnErr(k, v) },
		any: func(k string, v any) { ctx = ctx.Interface(k, v) }, strs: func(k string, v []string) { ctx = ctx.Strs(k, v) },
	}, prefix, a)
	return ctx
}

// add writes one attribute, resolved, through f.
func add(f fields, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	k := prefix + a.Key
	switch v.Kind() {
	case slog.KindString:
		f.str(k, v.String())
	case slog.KindInt64:
		f.i64(k, v.Int64())
	case slog.KindUint64:
		f.u64(k, v.Uint64())
	case slog.KindFloat64:
		f.f64(k, v.Float64())
	case slog.KindBool:
		f.b(k, v.Bool())
	case slog.KindDuration:
		f.dur(k, v.Duration())
	case slog.KindTime:
		f.tm(k, v.Time())
	case slog.KindGroup:
		p := prefix
		if a.Key != "" {
			p = k + "."
		}
		for _, ga := range v.Group() {
			add(f, p, ga)
		}
	default:
		switch x := v.Any().(type) {
		case error:
			f.err(k, x)
		case []string:
			f.strs(k, x)
		default:
			f.any(k, x)
		}
	}
}

// RateLimited returns a lograte.Limiter whose reports are warnings through log: the kind
// as the message, with the fields suppressed (the count) and period.
func RateLimited(log zerolog.Logger, period time.Duration) *lograte.Limiter {
	return lograte.New(period, func(kind string, suppressed uint64) {
		log.Warn().Uint64("suppressed", suppressed).Dur("period", period).Msg(kind)
	})
}

// Config adds c's fields to ev under their request names (interval, timeout, …), in the
// order of requests and replies: every log line that shows a job's checkpoint config.
func Config(ev *zerolog.Event, c messages.CheckpointConfig) *zerolog.Event {
	for _, f := range c.Fields() {
		ev = ev.Interface(f.Name, f.Value)
	}
	return ev
}
