package backoff

import "time"

// Doubling returns first doubled n times, at most limit; n ≤ 0 gives first (at most limit).
func Doubling(first time.Duration, n int, limit time.Duration) time.Duration {
	d := first
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
