package integration

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// restartServer stops the nats-server and, after down, starts it again on the same port
// and file store, as an operator restarting it would.
func (s *system) restartServer(down time.Duration) {
	s.t.Helper()
	u, err := url.Parse(s.srv.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	elapse(down)
	s.srv = natstest.StartIn(s.t, s.srv.Dir, port)
	s.t.Cleanup(s.stopAll) // cleanups run last-in first-out: stop the services before this server
}

func TestServicesSurviveANATSRestart(t *testing.T) {
	testOutage(t, 2*time.Second)
}

func TestServicesSurviveNATSUnreachableFor30s(t *testing.T) {
	slowTier(t, "a 30 s outage, about 35 s")
	testOutage(t, 30*time.Second)
}

// testOutage stops the server for down while Cairn runs, and checks that every service
// resumes by itself, exactly.
func testOutage(t *testing.T, down time.Duration) {
	s := startSystem(t, "out", "r-0", "r-1")
	s.waitRegistered("out", 2)
	evs := s.events("out")
	want := s.publish("out", "r-0", 0, 100)
	v := s.set("out", `{"interval":"200ms","timeout":"3s"}`)
	nextMatching(t, evs, 10*time.Second, "completed checkpoint before the restart", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})

	s.restartServer(down)

	// Everything resumes without anyone touching the services: config changes are taken,
	// the coordinator applies them, checkpoints complete, operators consume again.
	var v2 messages.ConfigView
	natstest.Eventually(t, 20*time.Second, "configsvc answers after the restart", func() bool {
		m, err := s.nc.Request(subjects.ConfigSet("out"), []byte(`{"interval":"300ms"}`), time.Second)
		if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
			return false
		}
		v2 = s.set("out", `{"interval":"250ms"}`)
		return true
	})
	nextMatching(t, evs, 30*time.Second, "completed checkpoint after the restart", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v2.Version
	})
	want = add(want, s.publish("out", "r-0", 100, 50))
	s.wantExact("out", "r-0", want)
	// Registrations may have expired during the outage; both instances are back within a
	// heartbeat.
	natstest.Eventually(t, 10*time.Second, "both instances registered again under the new version", func() bool {
		got := s.status("out")
		return got.Config.Version == v2.Version && len(got.Instances) == 2
	})
}
