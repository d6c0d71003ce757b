//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// streams are the streams behind Cairn's streams, KV buckets and the job's object store.
var streams = []string{"CAIRN_CONFIG", "CAIRN_CHECKPOINTS", "CAIRN_INPUT", "CAIRN_OUTPUT", "KV_CAIRN_MANIFESTS", "KV_CAIRN_LEASES", "KV_CAIRN_INSTANCES", "OBJ_CAIRN_SNAPSHOTS_" + job}

func TestCluster(t *testing.T) {
	requireDocker(t)
	s := startStack(t, true)
	v := s.setConfig(t, admin, `{"interval":"1s"}`)
	s.waitApplied(t, v.Version)
	s.waitCompleted(t, 0, 90*time.Second)

	for _, stream := range streams {
		if n := len(s.streamInfo(t, stream).Cluster.Replicas) + 1; n != 3 {
			t.Errorf("stream %s has %d replicas, want 3", stream, n)
		}
	}

	// Stop each node in turn, starting with the one leading the manifests bucket, without
	// which no checkpoint completes until a new leader is elected.
	leader := s.streamInfo(t, "KV_CAIRN_MANIFESTS").Cluster.Leader
	order := []string{leader}
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		if n != leader {
			order = append(order, n)
		}
	}
	completed := s.completions(t, s.servers())
	for _, name := range order {
		service, port := s.node(t, name)
		id := s.container(t, service)
		s.run(t, time.Minute, "docker", "stop", id)
		stopped := time.Now()
		after := waitCompletions(t, completed, stopped, 3, 90*time.Second)
		t.Logf("%s stopped: first checkpoint completed %s later, the third %s later", name,
			after[0].Sub(stopped).Round(10*time.Millisecond), after[2].Sub(stopped).Round(10*time.Millisecond))

		s.run(t, time.Minute, "docker", "start", id)
		restarted := time.Now()
		eventually(t, 90*time.Second, name+" healthy again", func() error {
			if h := s.health(t, id); h != "running healthy" {
				return fmt.Errorf("%s is %s", name, h)
			}
			return nil
		})
		// Checkpoints keep completing, and the returned node sees them and catches up.
		onNode := s.completions(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
		waitCompletions(t, onNode, restarted, 3, 60*time.Second)
		eventually(t, 60*time.Second, "every replica current again", func() error {
			for _, stream := range streams {
				for _, r := range s.streamInfo(t, stream).Cluster.Replicas {
					if !r.Current || r.Offline {
						return fmt.Errorf("%s replica on %s: current %v, offline %v", stream, r.Name, r.Current, r.Offline)
					}
				}
			}
			return nil
		})
		t.Logf("%s back: healthy, current and seeing completions %s after its start", name, time.Since(restarted).Round(10*time.Millisecond))
	}
}

// node returns the compose service and the published port of the NATS node named name.
func (s *stack) node(t *testing.T, name string) (string, int) {
	t.Helper()
	i := slices.Index([]string{"nats-1", "nats-2", "nats-3"}, name)
	if i < 0 {
		t.Fatalf("unknown NATS node %q", name)
	}
	return []string{"nats", "nats-2", "nats-3"}[i], s.ports[i]
}

// completions follows cairn.checkpoints.<job>.completed through servers and returns the
// arrival time of each event.
func (s *stack) completions(t *testing.T, servers string) <-chan time.Time {
	t.Helper()
	lines := s.follow(t, servers, "sub", "cairn.checkpoints."+job+".completed", "--headers-only")
	out := make(chan time.Time, 1024)
	go func() {
		defer close(out)
		for l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l.text), "[#") {
				out <- l.at
			}
		}
	}()
	return out
}

// waitCompletions waits for n completion events after since and returns their times.
func waitCompletions(t *testing.T, events <-chan time.Time, since time.Time, n int, timeout time.Duration) []time.Time {
	t.Helper()
	deadline := time.After(timeout)
	var got []time.Time
	for len(got) < n {
		select {
		case at, ok := <-events:
			if !ok {
				t.Fatal("nats sub on the completed subject ended")
			}
			if at.After(since) {
				got = append(got, at)
			}
		case <-deadline:
			t.Fatalf("after %s, %d of %d checkpoints completed", timeout, len(got), n)
		}
	}
	return got
}
