package cairnjs_test

import (
	"fmt"
	"testing"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

func TestParseAck(t *testing.T) {
	s := cairnjs.Subjects{}
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
	if job, inst, ok := (cairnjs.Subjects{Prefix: "x.y"}).ParseAck("x.y.ack.j.i"); job != "j" || inst != "i" || !ok {
		t.Errorf("ParseAck with a two-token prefix = %q, %q, %v", job, inst, ok)
	}
}

func TestParseConfigEvents(t *testing.T) {
	s := cairnjs.Subjects{Prefix: "x.y"}
	for _, tc := range []struct {
		subject, job string
		head, ok     bool
	}{
		{s.ConfigEvents("demo"), "demo", false, true},
		{s.ConfigHead("demo"), "demo", true, true},
		{"x.y.config.events.demo.other", "", false, false},
		{"x.y.config.events.", "", false, false},
		{"x.y.config.set.demo", "", false, false},
		{"cairn.config.events.demo", "", false, false},
	} {
		job, head, ok := s.ParseConfigEvents(tc.subject)
		if job != tc.job || head != tc.head || ok != tc.ok {
			t.Errorf("ParseConfigEvents(%q) = %q, %v, %v; want %q, %v, %v", tc.subject, job, head, ok, tc.job, tc.head, tc.ok)
		}
	}
}

func TestParseCheckpointEvent(t *testing.T) {
	s := cairnjs.Subjects{}
	for _, tc := range []struct {
		subject, job, outcome string
		ok                    bool
	}{
		{s.CheckpointEvent("demo", "completed"), "demo", "completed", true},
		{s.CheckpointEvent("demo", "aborted"), "demo", "aborted", true},
		{s.MemberEvents("demo"), "", "", false},
		{s.Alarms("demo"), "", "", false},
		{"cairn.checkpoints.demo", "", "", false},
		{"cairn.checkpoints..completed", "", "", false},
		{"cairn.barrier.demo", "", "", false},
	} {
		job, outcome, ok := s.ParseCheckpointEvent(tc.subject)
		if job != tc.job || outcome != tc.outcome || ok != tc.ok {
			t.Errorf("ParseCheckpointEvent(%q) = %q, %q, %v; want %q, %q, %v", tc.subject, job, outcome, ok, tc.job, tc.outcome, tc.ok)
		}
	}
}

func TestValidateSubject(t *testing.T) {
	for _, tc := range []struct {
		subject   string
		wildcards bool
		err       string
	}{
		{"cairn.input.j.i", false, ""},
		{"cairn.input.*.>", true, ""},
		{"", true, "empty"},
		{"a b", true, "white space is not allowed"},
		{"a..b", true, "token 2 is empty"},
		{"a.*", false, "wildcards are not allowed"},
		{"a.>.b", true, "'>' is only allowed as the last token"},
		{"a.b*", true, `token "b*" mixes a wildcard with other characters`},
	} {
		err := cairnjs.ValidateSubject(tc.subject, tc.wildcards)
		if got := fmt.Sprint(err); tc.err == "" && err != nil || tc.err != "" && got != tc.err {
			t.Errorf("ValidateSubject(%q, %v) = %v, want %q", tc.subject, tc.wildcards, err, tc.err)
		}
	}
}
