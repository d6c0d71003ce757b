package natstest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartConfig starts a nats-server from the server config conf (e.g. the accounts and
// users `cairn auth` generates) on a free port of 127.0.0.1, with JetStream storing in
// a t.TempDir; a "jetstream" block and the listen address are added. The server's
// notices, warnings and errors (permission violations among them) go to log. It is shut
// down when the test ends.
func StartConfig(t testing.TB, conf string, log *LogBuffer) *Server {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "server.conf")
	full := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q, max_memory_store: 268435456, max_file_store: 1073741824 }\n%s\n", filepath.Join(dir, "js"), conf)
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("server config: %v", err)
	}
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	s.SetLoggerV2(serverLog{log}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{Server: s, URL: s.ClientURL(), Dir: dir}
}

// serverLog writes a server's log lines to a LogBuffer.
type serverLog struct{ b *LogBuffer }

func (l serverLog) line(level, format string, v ...any) {
	fmt.Fprintf(l.b, "[%s] "+format+"\n", append([]any{level}, v...)...)
}

// Noticef implements server.Logger.
func (l serverLog) Noticef(format string, v ...any) { l.line("INF", format, v...) }

// Warnf implements server.Logger.
func (l serverLog) Warnf(format string, v ...any) { l.line("WRN", format, v...) }

// Fatalf implements server.Logger.
func (l serverLog) Fatalf(format string, v ...any) { l.line("FTL", format, v...) }

// Errorf implements server.Logger.
func (l serverLog) Errorf(format string, v ...any) { l.line("ERR", format, v...) }

// Debugf implements server.Logger.
func (l serverLog) Debugf(string, ...any) {}

// Tracef implements server.Logger.
func (l serverLog) Tracef(string, ...any) {}
