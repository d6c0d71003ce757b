package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one OS process the harness runs, kills and restarts. Every run of it appends
// its stdout and stderr to the same log file, after a header line naming the run.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	// logPath is the file the process's output goes to.
	logPath string
	// onExit, when set, is called (on its own goroutine) after an exit the harness did not
	// cause.
	onExit func(p *proc, err error)

	out *tapWriter

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while not running
	done   chan struct{} // closed when the current run has exited
	runs   int
	killed bool // the current run is being stopped by the harness
	// ident is the coordinator id the current run logged; identSet is closed once it is
	// known.
	ident    string
	identSet chan struct{}
	// readyAt is when the current operator run logged "operator running".
	readyAt time.Time
}

// newProc prepares a process whose output goes to logPath; it does not start it.
func newProc(name, logPath, bin string, env []string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, bin: bin, args: args, env: env, logPath: logPath}
	p.out = &tapWriter{f: f, onLine: p.scan}
	return p, nil
}

// start starts a new run of the process.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.name)
	}
	p.runs++
	p.out.reset()
	fmt.Fprintf(p.out.f, "=== chaos harness: %s run %d started %s\n", p.name, p.runs, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done, p.killed = cmd, make(chan struct{}), false
	p.ident, p.identSet = "", make(chan struct{})
	p.readyAt = time.Time{}
	go p.wait(cmd, p.done)
	return nil
}

// wait reaps a run and reports an exit the harness did not cause.
func (p *proc) wait(cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	fmt.Fprintf(p.out.f, "=== chaos harness: %s run exited %s: %v\n", p.name, time.Now().Format(time.RFC3339Nano), err)
	p.mu.Lock()
	expected := p.killed
	p.cmd = nil
	p.mu.Unlock()
	close(done)
	if !expected && p.onExit != nil {
		p.onExit(p, err)
	}
}

// running reports whether a run is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// signal sends sig to the current run and waits up to timeout for it to exit. It returns
// when the signal was sent and the run's exit code (-1 when a signal ended it).
func (p *proc) signal(sig os.Signal, timeout time.Duration) (sent time.Time, code int, err error) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return time.Time{}, 0, fmt.Errorf("%s is not running", p.name)
	}
	p.killed = true
	sent = time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		p.mu.Unlock()
		return sent, 0, fmt.Errorf("signal %s: %w", p.name, err)
	}
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return sent, cmd.ProcessState.ExitCode(), nil
	case <-t.C:
		return sent, 0, fmt.Errorf("%s did not exit within %s of %s", p.name, timeout, sig)
	}
}

// kill SIGKILLs the current run, waits for it to be reaped and returns when it was killed.
func (p *proc) kill() (time.Time, error) {
	at, _, err := p.signal(syscall.SIGKILL, 10*time.Second)
	return at, err
}

// terminate sends SIGTERM and waits up to timeout for a clean exit; a run that does not
// exit in time is killed. It reports anything but a prompt exit 0.
func (p *proc) terminate(timeout time.Duration) error {
	if !p.running() {
		return nil
	}
	_, code, err := p.signal(syscall.SIGTERM, timeout)
	if err != nil {
		if _, kerr := p.kill(); kerr != nil {
			return errors.Join(err, kerr)
		}
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with code %d after SIGTERM", p.name, code)
	}
	return nil
}

// waitRunning waits until a run is alive (a pending restart has happened).
func (p *proc) waitRunning(ctx context.Context) error {
	return poll(ctx, 10*time.Millisecond, p.name+" running", func() (bool, error) { return p.running(), nil })
}

// coordinatorID waits until the current run has logged its coordinator id.
func (p *proc) coordinatorID(ctx context.Context) (string, error) {
	p.mu.Lock()
	set := p.identSet
	p.mu.Unlock()
	if set == nil {
		return "", fmt.Errorf("%s never started", p.name)
	}
	select {
	case <-set:
	case <-ctx.Done():
		return "", fmt.Errorf("%s logged no coordinator id: %w", p.name, ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ident, nil
}

// currentID returns the coordinator id of the current run, or "" when it is not known
// or the process is not running.
func (p *proc) currentID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return ""
	}
	return p.ident
}

// logLine holds the fields of a service's JSON log line the harness reads.
type logLine struct {
	Message     string `json:"message"`
	Coordinator string `json:"coordinator"`
}

// scan looks at one line of output. The first JSON line carrying a "coordinator" field
// gives the run's coordinator id (the coordinator attaches it to every line, "coordinator
// running" among them); an operator's "operator running" tells when it was ready.
func (p *proc) scan(line []byte) {
	if len(line) == 0 || line[0] != '{' {
		return
	}
	var l logLine
	if json.Unmarshal(line, &l) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.Coordinator != "" && p.ident == "" && p.identSet != nil {
		p.ident = l.Coordinator
		close(p.identSet)
	}
	if l.Message == "operator running" {
		p.readyAt = time.Now()
	}
}

// readySince returns when the current operator run became ready, zero if not yet.
func (p *proc) readySince() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readyAt
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// close closes the log file; call it once the process is stopped for good.
func (p *proc) close() {
	if err := p.out.f.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: close %s: %v\n", p.logPath, err)
	}
}

// tapWriter writes a process's output to its log file and hands every complete line to
// onLine. exec.Cmd calls Write from one goroutine at a time when Stdout and Stderr are the
// same writer, and a new run starts only after the previous one's output is copied.
type tapWriter struct {
	f       *os.File
	onLine  func([]byte)
	partial []byte
}

// Write implements io.Writer.
func (w *tapWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.onLine(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	return n, err
}

// reset forgets a partial line left by a killed run.
func (w *tapWriter) reset() { w.partial = nil }
