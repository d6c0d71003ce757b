package lograte

import (
	"sync"
	"time"
)

// Limiter decides which lines of each kind to log. A kind is a fixed string (the line's
// message): never put values that come from outside into it, or the kinds grow without
// bound. It is safe for concurrent use.
type Limiter struct {
	period time.Duration
	report func(kind string, suppressed uint64)

	mu    sync.Mutex
	kinds map[string]*window
}

// window is the period after a line of a kind went out.
type window struct {
	until      time.Time
	suppressed uint64
	// flush reports the suppressed lines at until; nil while none was suppressed.
	flush *time.Timer
}

// New returns a Limiter that lets through at most one line of a kind per period and calls
// report, on a goroutine of its own, at the end of every period in which lines of that
// kind were suppressed, with their count.
func New(period time.Duration, report func(kind string, suppressed uint64)) *Limiter {
	return &Limiter{period: period, report: report, kinds: map[string]*window{}}
}

// Allow reports whether a line of kind may be logged now: the first one, and the first
// after a period that began with a logged line. A line that may not is counted for the
// report at the end of the period.
func (l *Limiter) Allow(kind string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.kinds[kind]
	if w == nil || !now.Before(w.until) {
		// A new period; the last one's report, if due, still reports what it counted.
		l.kinds[kind] = &window{until: now.Add(l.period)}
		return true
	}
	w.suppressed++
	if w.flush == nil {
		w.flush = time.AfterFunc(w.until.Sub(now), func() { l.end(kind, w) })
	}
	return false
}

// end reports the lines suppressed in w.
func (l *Limiter) end(kind string, w *window) {
	l.mu.Lock()
	n := w.suppressed
	w.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		l.report(kind, n)
	}
}
