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
