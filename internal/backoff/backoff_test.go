package backoff

import (
	"testing"
	"time"
)

func TestDoubling(t *testing.T) {
	tests := []struct {
		name         string
		first, limit time.Duration
		n            int
		want         time.Duration
	}{
		{name: "first", first: time.Second, n: 0, limit: time.Minute, want: time.Second},
		{name: "negative", first: time.Second, n: -3, limit: time.Minute, want: time.Second},
		{name: "doubled", first: time.Second, n: 3, limit: time.Minute, want: 8 * time.Second},
		{name: "bounded", first: time.Second, n: 10, limit: time.Minute, want: time.Minute},
		{name: "no overflow", first: time.Hour, n: 1000, limit: 64 * time.Hour, want: 64 * time.Hour},
		{name: "first above the limit", first: time.Hour, n: 0, limit: time.Minute, want: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Doubling(tt.first, tt.n, tt.limit); got != tt.want {
				t.Fatalf("Doubling(%s, %d, %s) = %s, want %s", tt.first, tt.n, tt.limit, got, tt.want)
			}
		})
	}
}
