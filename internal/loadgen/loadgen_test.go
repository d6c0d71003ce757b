package loadgen_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/loadgen"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestRunPublishesCountEventsPerInstance(t *testing.T) {
	s := natstest.Start(t)
	_, js, res := s.Resources(t, cairnjs.Options{})
	cfg := loadgen.DefaultConfig("lg", "a", "b")
	cfg.Rate, cfg.Count = 2000, 25
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := loadgen.Run(ctx, cfg, js, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	info, err := res.Input.Info(ctx, jetstream.WithSubjectFilter("cairn.input.lg.>"))
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"cairn.input.lg.a", "cairn.input.lg.b"} {
		if got := info.State.Subjects[subj]; got != 25 {
			t.Fatalf("%s holds %d events, want 25", subj, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  loadgen.Config
		want string
	}{
		{"bad job", loadgen.Config{Job: "a.b", Instances: []string{"i"}, Rate: 1, Keys: 1}, "job"},
		{"no instances", loadgen.Config{Job: "j", Rate: 1, Keys: 1}, "no instances"},
		{"bad instance", loadgen.Config{Job: "j", Instances: []string{"i*"}, Rate: 1, Keys: 1}, "instance"},
		{"zero rate", loadgen.Config{Job: "j", Instances: []string{"i"}, Keys: 1}, "rate"},
		{"zero keys", loadgen.Config{Job: "j", Instances: []string{"i"}, Rate: 1}, "keys"},
		{"negative count", loadgen.Config{Job: "j", Instances: []string{"i"}, Rate: 1, Keys: 1, Count: -1}, "count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error about %s", err, tt.want)
			}
		})
	}
	if err := loadgen.DefaultConfig("j", "i").Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

func TestTotalsAndSequenceOf(t *testing.T) {
	got := loadgen.Totals(12, 8)
	want := map[string]messages.KeyTotals{
		"k0": {Count: 2, Sum: 1 + 9}, "k1": {Count: 2, Sum: 2 + 10}, "k2": {Count: 2, Sum: 3 + 1}, "k3": {Count: 2, Sum: 4 + 2},
		"k4": {Count: 1, Sum: 5}, "k5": {Count: 1, Sum: 6}, "k6": {Count: 1, Sum: 7}, "k7": {Count: 1, Sum: 8},
	}
	if !maps.Equal(got, want) {
		t.Fatalf("Totals(12, 8) = %v, want %v", got, want)
	}
	for id, want := range map[string]int{"abc-counter-0-41": 41, "run-x-0": 0, "nodash": -1, "a-b-c-": -1, "a-b-x": -1} {
		n, ok := loadgen.SequenceOf(id)
		if ok != (want >= 0) || ok && n != want {
			t.Errorf("SequenceOf(%q) = %d, %v; want %d", id, n, ok, want)
		}
	}
}
