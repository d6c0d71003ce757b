package proctest

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

// Proc is one OS process a test runs, signals and restarts. Every run of it appends its
// stdout and stderr to the same log file, after a header line naming the run; the lines of
// the newest run are also kept in memory.
type Proc struct {
	// Name names the process in logs and errors.
	Name string
	// LogPath is the file the process's output goes to.
	LogPath string
	// OnExit, when set (before the first Start), is called on its own goroutine after an
	// exit the test did not cause by signalling the process.
	OnExit func(p *Proc, err error)

	bin  string
	args []string
	env  []string
	out  *tapWriter

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while not running
	done   chan struct{} // closed when the current run has exited
	runs   int
	killed bool // the current run is being stopped by the test
	// exitCode and exitErr describe the newest run's exit once done is closed.
	exitCode int
	exitErr  error
	// ident is the coordinator id the current run logged; identSet is closed once it is
	// known.
	ident    string
	identSet chan struct{}
	// incarnation is the operator incarnation the current run logged.
	incarnation string
	// readyAt is when the current operator run logged "operator running"; ready is closed
	// then.
	readyAt time.Time
	ready   chan struct{}
	// lines are the newest run's output lines.
	lines []string
}

// New prepares a process whose output goes to logPath; it does not start it.
func New(name, logPath, bin string, env []string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: name, bin: bin, args: args, env: env, LogPath: logPath}
	p.out = &tapWriter{f: f, onLine: p.scan}
	return p, nil
}

// Start starts a new run of the process.
func (p *Proc) Start() error { return p.StartWith() }

// StartWith starts a new run with extra arguments after the process's own.
func (p *Proc) StartWith(extra ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	p.runs++
	p.out.reset()
	fmt.Fprintf(p.out.f, "=== harness: %s run %d started %s\n", p.Name, p.runs, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, append(append([]string(nil), p.args...), extra...)...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done, p.killed = cmd, make(chan struct{}), false
	p.exitCode, p.exitErr = 0, nil
	p.ident, p.identSet = "", make(chan struct{})
	p.incarnation = ""
	p.readyAt, p.ready = time.Time{}, make(chan struct{})
	p.lines = nil
	go p.wait(cmd, p.done)
	return nil
}

// wait reaps a run and reports an exit the test did not cause.
func (p *Proc) wait(cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	fmt.Fprintf(p.out.f, "=== harness: %s run exited %s: %v\n", p.Name, time.Now().Format(time.RFC3339Nano), err)
	p.mu.Lock()
	expected := p.killed
	p.cmd = nil
	p.exitCode, p.exitErr = cmd.ProcessState.ExitCode(), err
	p.mu.Unlock()
	close(done)
	if !expected && p.OnExit != nil {
		p.OnExit(p, err)
	}
}

// Running reports whether a run is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Runs counts the runs started so far.
func (p *Proc) Runs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs
}

// Done returns a channel closed when the newest run has exited (nil before the first
// run).
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Exit returns the newest run's exit code (-1 when a signal ended it) and Wait error;
// valid once Done is closed.
func (p *Proc) Exit() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitCode, p.exitErr
}

// Wait waits until the newest run exits by itself and returns its exit code.
func (p *Proc) Wait(ctx context.Context) (int, error) {
	done := p.Done()
	if done == nil {
		return 0, fmt.Errorf("%s never started", p.Name)
	}
	select {
	case <-done:
		code, _ := p.Exit()
		return code, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for %s to exit: %w", p.Name, ctx.Err())
	}
}

// Signal sends sig to the current run and waits up to timeout for it to exit. It returns
// when the signal was sent and the run's exit code (-1 when a signal ended it).
func (p *Proc) Signal(sig os.Signal, timeout time.Duration) (sent time.Time, code int, err error) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return time.Time{}, 0, fmt.Errorf("%s is not running", p.Name)
	}
	p.killed = true
	sent = time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		p.mu.Unlock()
		return sent, 0, fmt.Errorf("signal %s: %w", p.Name, err)
	}
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		code, _ := p.Exit()
		return sent, code, nil
	case <-t.C:
		return sent, 0, fmt.Errorf("%s did not exit within %s of %s", p.Name, timeout, sig)
	}
}

// Kill SIGKILLs the current run, waits for it to be reaped and returns when it was killed.
func (p *Proc) Kill() (time.Time, error) {
	at, _, err := p.Signal(syscall.SIGKILL, 10*time.Second)
	return at, err
}

// Terminate sends SIGTERM and waits up to timeout for a clean exit; a run that does not
// exit in time is killed. It reports anything but a prompt exit 0. A process not running
// is left alone.
func (p *Proc) Terminate(timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	_, code, err := p.Signal(syscall.SIGTERM, timeout)
	if err != nil {
		if _, kerr := p.Kill(); kerr != nil {
			return errors.Join(err, kerr)
		}
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with code %d after SIGTERM", p.Name, code)
	}
	return nil
}

// WaitRunning waits until a run is alive (a pending restart has happened).
func (p *Proc) WaitRunning(ctx context.Context) error {
	return Poll(ctx, 10*time.Millisecond, p.Name+" running", func() (bool, error) { return p.Running(), nil })
}

// WaitReady waits until the current run has logged "operator running"; it fails at once
// when the run exits first.
func (p *Proc) WaitReady(ctx context.Context) error {
	p.mu.Lock()
	ready, done := p.ready, p.done
	p.mu.Unlock()
	if ready == nil {
		return fmt.Errorf("%s never started", p.Name)
	}
	select {
	case <-ready:
		return nil
	case <-done:
		code, err := p.Exit()
		return fmt.Errorf("%s exited (code %d: %v) before it was ready; last lines:\n%s", p.Name, code, err, p.Tail(10))
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s to be ready: %w", p.Name, ctx.Err())
	}
}

// CoordinatorID waits until the current run has logged its coordinator id.
func (p *Proc) CoordinatorID(ctx context.Context) (string, error) {
	p.mu.Lock()
	set := p.identSet
	p.mu.Unlock()
	if set == nil {
		return "", fmt.Errorf("%s never started", p.Name)
	}
	select {
	case <-set:
	case <-ctx.Done():
		return "", fmt.Errorf("%s logged no coordinator id: %w", p.Name, ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ident, nil
}

// CurrentID returns the coordinator id of the current run, or "" when it is not known
// or the process is not running.
func (p *Proc) CurrentID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return ""
	}
	return p.ident
}

// Incarnation returns the operator incarnation the newest run logged, "" if none yet.
func (p *Proc) Incarnation() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.incarnation
}

// ReadySince returns when the current operator run became ready, zero if not yet.
func (p *Proc) ReadySince() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readyAt
}

// Lines returns the newest run's output lines so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// LogLine holds the fields of a service's JSON log line the harnesses read.
type LogLine struct {
	Level       string `json:"level"`
	Message     string `json:"message"`
	Error       string `json:"error"`
	Coordinator string `json:"coordinator"`
	Incarnation string `json:"incarnation"`
}

// scan looks at one line of output. The first JSON line carrying a "coordinator" field
// gives the run's coordinator id (the coordinator attaches it to every line, "coordinator
// running" among them), the first carrying "incarnation" the operator's incarnation; an
// operator's "operator running" tells when it was ready.
func (p *Proc) scan(line []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, string(line))
	if len(line) == 0 || line[0] != '{' {
		return
	}
	var l LogLine
	if json.Unmarshal(line, &l) != nil {
		return
	}
	if l.Coordinator != "" && p.ident == "" && p.identSet != nil {
		p.ident = l.Coordinator
		close(p.identSet)
	}
	if l.Incarnation != "" && p.incarnation == "" {
		p.incarnation = l.Incarnation
	}
	if l.Message == "operator running" && p.readyAt.IsZero() && p.ready != nil {
		p.readyAt = time.Now()
		close(p.ready)
	}
}

// Tail returns the last n lines of the process's log file.
func (p *Proc) Tail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close closes the log file; call it once the process is stopped for good.
func (p *Proc) Close() {
	if err := p.out.f.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: close %s: %v\n", p.LogPath, err)
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
