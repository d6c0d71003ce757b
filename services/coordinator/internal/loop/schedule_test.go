package loop

import (
	"testing"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestNextTrigger(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := func(interval, minPause time.Duration) messages.CheckpointConfig {
		c := messages.DefaultConfig()
		c.Interval, c.MinPause = interval, minPause
		return c
	}
	tests := []struct {
		name         string
		cfg          messages.CheckpointConfig
		lastTrigger  time.Duration // offsets from t0; -1 means never
		lastComplete time.Duration
		now          time.Duration
		want         time.Duration
	}{
		{"never triggered fires now", cfg(10*time.Second, 0), -1, -1, 3 * time.Second, 3 * time.Second},
		{"interval not yet elapsed", cfg(10*time.Second, 0), 0, -1, 4 * time.Second, 10 * time.Second},
		{"shorter interval already overdue fires now", cfg(2*time.Second, 0), 0, -1, 7 * time.Second, 7 * time.Second},
		{"shorter interval not yet due", cfg(5*time.Second, 0), 0, -1, 3 * time.Second, 5 * time.Second},
		{"longer interval postpones", cfg(30*time.Second, 0), 0, -1, 12 * time.Second, 30 * time.Second},
		{"min pause after completion dominates", cfg(time.Second, 5*time.Second), 0, 2 * time.Second, 2 * time.Second, 7 * time.Second},
		{"interval dominates min pause", cfg(10*time.Second, time.Second), 0, 2 * time.Second, 2 * time.Second, 10 * time.Second},
		{"both elapsed fires now", cfg(time.Second, time.Second), 0, 2 * time.Second, 9 * time.Second, 9 * time.Second},
	}
	at := func(d time.Duration) time.Time {
		if d < 0 {
			return time.Time{}
		}
		return t0.Add(d)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := nextTrigger(tt.cfg, at(tt.lastTrigger), at(tt.lastComplete), at(tt.now))
			if !got.Equal(at(tt.want)) {
				t.Fatalf("next = t0+%s, want t0+%s", got.Sub(t0), tt.want)
			}
		})
	}
}
