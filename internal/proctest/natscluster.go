package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
)

// NATSCluster is a JetStream cluster of nats-server processes on 127.0.0.1: what a
// deployment of three nodes looks like to its clients, with every node a process a test
// can stop (SIGSTOP) and resume.
type NATSCluster struct {
	Nodes []*NATSNode
}

// NATSNode is one server of a NATSCluster.
type NATSNode struct {
	// Name is the node's server_name, as stream infos name their leaders.
	Name string
	// URL is its client URL.
	URL string
	// Proc is its process.
	Proc *Proc
}

// StartNATSCluster starts n nodes of bin (a NATSServer build) named n1, n2 …, clustered
// with routes to each other, each storing under dir/<name> and logging to
// dir/<name>.log, and stops them when the test ends (resuming a stopped one first). The
// nodes announce their client URLs to clients, so a client connected to one learns the
// others. It returns once the processes run; JetStream is usable once the cluster has
// elected its meta leader, a few seconds later.
func StartNATSCluster(t testing.TB, bin, dir string, n int) *NATSCluster {
	t.Helper()
	c := &NATSCluster{}
	routes := make([]string, n)
	clusterPorts := make([]int, n)
	for i := range n {
		clusterPorts[i] = natstest.FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", clusterPorts[i])
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		port := natstest.FreePort(t)
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 2GB
}
cluster {
  name: cairn-test
  listen: "127.0.0.1:%d"
  routes: [%s]
  # A node that hangs is dropped by the others within 6 to 8 s (the defaults, pings every
  # 30 s and 2 outstanding, take up to 90 s, while requests still go to its replicas).
  ping_interval: "2s"
  ping_max: 3
}
`, name, port, filepath.Join(dir, name), clusterPorts[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := New("nats-server "+name, filepath.Join(dir, name+".log"), bin, os.Environ(), "-c", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, &NATSNode{Name: name, URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Proc: p})
	}
	t.Cleanup(func() { c.stop(t) })
	for _, node := range c.Nodes {
		if err := node.Proc.Start(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// stop resumes and terminates every node, then closes their logs.
func (c *NATSCluster) stop(t testing.TB) {
	var wg sync.WaitGroup
	for _, node := range c.Nodes {
		wg.Go(func() {
			_, _ = node.Proc.Resume()
			if err := node.Proc.Terminate(10 * time.Second); err != nil {
				t.Logf("stop %s: %v", node.Name, err)
			}
		})
	}
	wg.Wait()
	for _, node := range c.Nodes {
		node.Proc.Close()
	}
}

// URLs returns the client URLs of nodes, comma-separated (the form of NATS_URL); of
// every node when none is named.
func (c *NATSCluster) URLs(nodes ...*NATSNode) string {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	urls := make([]string, len(nodes))
	for i, node := range nodes {
		urls[i] = node.URL
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name, nil when there is none.
func (c *NATSCluster) Node(name string) *NATSNode {
	for _, node := range c.Nodes {
		if node.Name == name {
			return node
		}
	}
	return nil
}

// Others returns every node but node.
func (c *NATSCluster) Others(node *NATSNode) []*NATSNode {
	var out []*NATSNode
	for _, n := range c.Nodes {
		if n != node {
			out = append(out, n)
		}
	}
	return out
}
