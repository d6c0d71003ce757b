package jetstream_test

import (
	"testing"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

func TestParseAck(t *testing.T) {
	s := cjs.Subjects{}
	if got := s.InstanceAck("demo", "counter-0"); got != "cairn.ack.demo.counter-0" {
		t.Fatalf("InstanceAck = %s", got)
	}
	for _, tc := range []struct {
		subject, job, instance string
		ok                     bool
	}{
		{"cairn.ack.demo.counter-0", "demo", "counter-0", true},
		{"cairn.ack.demo", "demo", "", true},
		{"cairn.ack.demo.counter-0.x", "", "", false},
		{"cairn.ack.demo.", "", "", false},
		{"cairn.ack.", "", "", false},
		{"cairn.ack", "", "", false},
		{"cairn.barrier.demo", "", "", false},
		{"other.ack.demo.i", "", "", false},
	} {
		job, instance, ok := s.ParseAck(tc.subject)
		if job != tc.job || instance != tc.instance || ok != tc.ok {
			t.Errorf("ParseAck(%q) = %q, %q, %v; want %q, %q, %v", tc.subject, job, instance, ok, tc.job, tc.instance, tc.ok)
		}
	}
	if job, inst, ok := (cjs.Subjects{Prefix: "x.y"}).ParseAck("x.y.ack.j.i"); job != "j" || inst != "i" || !ok {
		t.Errorf("ParseAck with a two-token prefix = %q, %q, %v", job, inst, ok)
	}
}
