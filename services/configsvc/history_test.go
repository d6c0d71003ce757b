package configsvc_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestHistoryListsEveryVersionOldestFirst(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	h.mustSet(t, "hist", `{"interval":"2s"}`)
	h.mustSet(t, "other", `{"interval":"3s"}`)
	h.mustSet(t, "hist", `{"retain":7}`)
	h.mustSet(t, "hist", `{"interval":"750ms","timeout":"1m"}`)

	history := func(job string) (messages.ConfigHistory, string) {
		t.Helper()
		m, err := h.nc.Request(h.subj.ConfigHistory(job), nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var hist messages.ConfigHistory
		if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
			return hist, code
		}
		if err := json.Unmarshal(m.Data, &hist); err != nil {
			t.Fatalf("history reply %q: %v", m.Data, err)
		}
		return hist, ""
	}
	got, code := history("hist")
	if code != "" || got.Job != "hist" || len(got.Versions) != 3 || got.Truncated {
		t.Fatalf("history of hist: %+v (code %q)", got, code)
	}
	want := []struct {
		version  uint64
		interval string
		retain   int
	}{{1, "2s", 3}, {2, "2s", 7}, {3, "750ms", 7}}
	for i, w := range want {
		v := got.Versions[i]
		if v.Version != w.version || v.Interval != w.interval || v.Retain != w.retain || v.UpdatedAt == nil {
			t.Fatalf("version %d: %+v, want version %d interval %s retain %d", i, v, w.version, w.interval, w.retain)
		}
	}
	if got.Versions[2].Timeout != "1m" {
		t.Fatalf("timeout %q, want 1m", got.Versions[2].Timeout)
	}
	if none, code := history("never-set"); code != "" || none.Versions == nil || len(none.Versions) != 0 {
		t.Fatalf("history of a job with no config: %+v (code %q), want an empty list", none, code)
	}
	if _, code := history("a.b"); code != "400" {
		t.Fatalf("history of a bad job name: code %q, want 400", code)
	}
}
