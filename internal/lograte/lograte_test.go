package lograte_test

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairn-stream/cairn/internal/lograte"
)

// TestLimiter: per kind, the first line goes out, the rest of its period is counted and
// reported once at the period's end; the first line after the period goes out again;
// kinds are independent.
func TestLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		reports := map[string][]uint64{}
		l := lograte.New(10*time.Second, func(kind string, n uint64) {
			mu.Lock()
			defer mu.Unlock()
			reports[kind] = append(reports[kind], n)
		})
		allowed := map[string]int{}
		burst := func(kind string, n int) {
			for range n {
				if l.Allow(kind) {
					allowed[kind]++
				}
			}
		}
		burst("a", 2000)
		burst("b", 1)
		if allowed["a"] != 1 || allowed["b"] != 1 {
			t.Fatalf("allowed %v in the first period, want one of each kind", allowed)
		}
		time.Sleep(5 * time.Second)
		burst("a", 10)
		synctest.Wait()
		mu.Lock()
		if len(reports) != 0 {
			t.Fatalf("reported %v before the period ended", reports)
		}
		mu.Unlock()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mu.Lock()
		if got := reports["a"]; len(got) != 1 || got[0] != 2009 {
			t.Fatalf("reports of a: %v, want [2009]", got)
		}
		if _, ok := reports["b"]; ok {
			t.Fatalf("b reported %v; nothing of b was suppressed", reports["b"])
		}
		mu.Unlock()
		burst("a", 3)
		if allowed["a"] != 2 {
			t.Fatalf("a allowed %d times, want the first line after the period too", allowed["a"])
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if got := reports["a"]; len(got) != 2 || got[1] != 2 {
			t.Fatalf("reports of a: %v, want [2009 2]", got)
		}
	})
}
