package retry_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairn-stream/cairn/internal/retry"
)

func TestDo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errNotYet := errors.New("not yet")
		var waits []time.Duration
		calls := 0
		start := time.Now()
		err := retry.Do(t.Context(), func(context.Context) error {
			if calls++; calls < 8 {
				return errNotYet
			}
			return nil
		}, func(err error, wait time.Duration) {
			if !errors.Is(err, errNotYet) {
				t.Errorf("onRetry got %v", err)
			}
			waits = append(waits, wait)
		})
		if err != nil {
			t.Fatalf("Do = %v", err)
		}
		want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
		if !slices.Equal(waits, want) {
			t.Fatalf("waits %v, want %v", waits, want)
		}
		if took := time.Since(start); took != 17750*time.Millisecond {
			t.Fatalf("took %s, want the sum of the waits", took)
		}

		// A context that ends while waiting stops it with both errors.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		err = retry.Do(ctx, func(context.Context) error { return errNotYet }, nil)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errNotYet) {
			t.Fatalf("Do after the deadline = %v, want the deadline and the last error", err)
		}
	})
}

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
			if got := retry.Doubling(tt.first, tt.n, tt.limit); got != tt.want {
				t.Fatalf("Doubling(%s, %d, %s) = %s, want %s", tt.first, tt.n, tt.limit, got, tt.want)
			}
		})
	}
}
