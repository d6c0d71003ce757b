package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// binaries are the programs the harness runs.
type binaries struct {
	cairn      string
	natsServer string
}

// buildBinaries builds ./cmd/cairn and a static nats-server (the version go.mod requires)
// into dir, both at once.
func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	cairn, natsServer := proctest.Cairn(dir), proctest.NATSServer(dir)
	proctest.Build(t, cairn, natsServer)
	return binaries{cairn: cairn.Out, natsServer: natsServer.Out}
}

// cluster is the set of processes under test.
type cluster struct {
	t   *testing.T
	url string

	nats      *proctest.Proc
	configsvc *proctest.Proc
	coords    []*proctest.Proc
	ops       []*proctest.Proc // ops[i] runs instance instanceName(i)
	dups      []*proctest.Proc // dups[i] is a second process of instance instanceName(i)
	// opMu[i] serialises the harness's actions on instance i: a stop and the scheduling of
	// its restart, or a duplicate start from begin to end.
	opMu [instances]sync.Mutex

	stopping chan struct{} // closed when the harness stops everything

	mu        sync.Mutex
	stopped   bool     // stopping is closed; no restart may be scheduled
	pending   int      // restarts scheduled and not yet done
	surprises []string // exits the harness did not cause
	// mayFence are the processes of which one may exit non-zero on its own, replaced by
	// the other (a duplicate start); fenced records those exits.
	mayFence []*proctest.Proc
	fenced   []string
}

// instanceName is the id of the i-th operator instance.
func instanceName(i int) string { return fmt.Sprintf("counter-%d", i) }

// startCluster starts the nats-server (JetStream, file store in storeDir) and every Cairn
// process; each process logs to its own file in logDir.
func startCluster(t *testing.T, bins binaries, logDir, storeDir string) *cluster {
	t.Helper()
	port := natstest.FreePort(t)
	c := &cluster{t: t, url: "nats://127.0.0.1:" + strconv.Itoa(port), stopping: make(chan struct{})}
	mk := func(name, bin string, env []string, args ...string) *proctest.Proc {
		p, err := proctest.New(name, filepath.Join(logDir, strings.ReplaceAll(name, " ", "-")+".log"), bin, env, args...)
		if err != nil {
			t.Fatal(err)
		}
		p.OnExit = c.surprised
		return p
	}
	env := proctest.ServiceEnv(c.url)
	conf := filepath.Join(logDir, "nats-server.conf")
	if err := os.WriteFile(conf, natsConfig(port, storeDir), 0o644); err != nil {
		t.Fatal(err)
	}
	c.nats = mk("nats-server", bins.natsServer, os.Environ(), "-c", conf)
	c.configsvc = mk("configsvc", bins.cairn, env, "configsvc")
	for i := range 2 {
		c.coords = append(c.coords, mk(fmt.Sprintf("coordinator-%d", i), bins.cairn, env, "coordinator"))
	}
	for i := range instances {
		args := []string{"operator", "--job", job, "--instance", instanceName(i), "--output", subjects.Output(job, instanceName(i))}
		c.ops = append(c.ops, mk("operator "+instanceName(i), bins.cairn, env, args...))
		c.dups = append(c.dups, mk("operator "+instanceName(i)+" duplicate", bins.cairn, env, args...))
	}
	t.Cleanup(c.stop)
	if err := c.nats.Start(); err != nil {
		t.Fatal(err)
	}
	c.createOutputStream()
	for _, p := range c.all() {
		if p == c.nats || slices.Contains(c.dups, p) {
			continue // started already, or only by the duplicate action
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// outputWindow is CAIRN_OUTPUT's duplicate window in the harness: far shorter than most
// operator downtimes and replays of the storm, so that the exactly-once output it checks
// is Cairn's deduplication, not the window's.
const outputWindow = 2 * time.Second

// createOutputStream creates CAIRN_OUTPUT as Cairn's services would, but with
// outputWindow, before any service starts (they use a stream that exists as it is).
func (c *cluster) createOutputStream() {
	c.t.Helper()
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: c.url, Name: "cairn-chaos-setup"})
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitNATS(ctx, func(ctx context.Context) error { _, err := js.AccountInfo(ctx); return err }); err != nil {
		c.t.Fatal(err)
	}
	for _, cfg := range (cairnjs.Options{}).StreamConfigs() {
		if cfg.Name != cairnjs.OutputStream {
			continue
		}
		cfg.Duplicates = outputWindow
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			c.t.Fatalf("create %s with a %s duplicate window: %v", cfg.Name, outputWindow, err)
		}
	}
}

// natsConfig is the nats-server's config: one server on 127.0.0.1:port with JetStream
// storing in storeDir, capped so that a runaway run cannot fill the disk. Restarts use the
// same file, so the same port and store.
func natsConfig(port int, storeDir string) []byte {
	return fmt.Appendf(nil, `server_name: cairn-chaos
listen: "127.0.0.1:%d"
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 2GB
}
`, port, storeDir)
}

// all returns every process, the nats-server first.
func (c *cluster) all() []*proctest.Proc {
	ps := []*proctest.Proc{c.nats, c.configsvc}
	ps = append(ps, c.coords...)
	ps = append(ps, c.ops...)
	return append(ps, c.dups...)
}

// surprised records an exit the harness did not cause and restarts the process, so that
// the run goes on; the test fails at the end.
func (c *cluster) surprised(p *proctest.Proc, err error) {
	c.mu.Lock()
	if slices.Contains(c.mayFence, p) {
		c.fenced = append(c.fenced, fmt.Sprintf("%s exited at %s: %v", p.Name, clock(time.Now()), err))
		c.mu.Unlock()
		return
	}
	c.surprises = append(c.surprises, fmt.Sprintf("%s exited on its own at %s: %v", p.Name, clock(time.Now()), err))
	c.mu.Unlock()
	c.restartAfter(p, time.Second)
}

// expectFence names the processes of which one may exit on its own, replaced by the
// other; without arguments it ends that.
func (c *cluster) expectFence(ps ...*proctest.Proc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mayFence = ps
}

// restartAfter starts p again after delay, on its own goroutine, unless the harness is
// stopping by then.
func (c *cluster) restartAfter(p *proctest.Proc, delay time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.pending++
	go func() {
		err := c.restart(p, delay)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.pending--
		if err != nil {
			c.surprises = append(c.surprises, fmt.Sprintf("restart %s: %v", p.Name, err))
		}
	}()
}

func (c *cluster) restart(p *proctest.Proc, delay time.Duration) error {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-c.stopping:
		return nil
	case <-t.C:
	}
	return p.Start()
}

// waitRestarts waits until no restart is pending.
func (c *cluster) waitRestarts(ctx context.Context) error {
	return poll(ctx, 10*time.Millisecond, "the pending restarts", func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pending == 0, nil
	})
}

// unexpected returns the exits the harness did not cause, so far.
func (c *cluster) unexpected() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.surprises)
}

// fencedExits returns the exits of processes replaced by another process of their
// instance, so far.
func (c *cluster) fencedExits() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.fenced)
}

// stop stops every process: the Cairn services with SIGTERM (they must drain and exit 0),
// then the nats-server. On failure it prints the tail of every log and keeps the logs.
func (c *cluster) stop() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	close(c.stopping)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.waitRestarts(ctx); err != nil {
		c.t.Errorf("stopping: %v", err)
	}
	services := c.all()[1:]
	errs := make([]error, len(services))
	var wg sync.WaitGroup
	for i, p := range services {
		wg.Go(func() { errs[i] = p.Terminate(20 * time.Second) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Errorf("stopping the services: %v", err)
		}
	}
	if err := c.nats.Terminate(10 * time.Second); err != nil {
		c.t.Logf("stopping the nats-server: %v", err)
	}
	if c.t.Failed() {
		for _, p := range c.all() {
			c.t.Logf("--- last lines of %s (%s):\n%s", p.Name, p.LogPath, p.Tail(25))
		}
	}
	for _, p := range c.all() {
		p.Close()
	}
}

// waitNATS waits until the nats-server accepts JetStream requests on conn.
func waitNATS(ctx context.Context, ready func(context.Context) error) error {
	return poll(ctx, 20*time.Millisecond, "nats-server ready", func() (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return ready(rctx) == nil, nil
	})
}
