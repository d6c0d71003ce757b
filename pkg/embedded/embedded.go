package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an in-process nats-server with JetStream.
type Options struct {
	// Host to listen on; empty means 127.0.0.1 (never all interfaces by default).
	Host string
	// Port to listen on; -1 picks a free one, 0 means 4222.
	Port int
	// StoreDir is the JetStream file store directory; required.
	StoreDir string
	// MaxMemory and MaxStore cap JetStream memory and file storage; 0 means 256 MiB and
	// 4 GiB.
	MaxMemory int64
	MaxStore  int64
	// Logger, when set, receives the server's log lines.
	Logger server.Logger
}

// ErrNoStoreDir is returned by Start without a store directory.
var ErrNoStoreDir = errors.New("embedded nats-server: StoreDir is required")

// Start starts a nats-server with JetStream in this process and waits until it
// accepts connections. Stop it with Shutdown and WaitForShutdown.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, ErrNoStoreDir
	}
	opts := &server.Options{
		ServerName:         "cairn-embedded",
		Host:               o.Host,
		Port:               o.Port,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		NoSigs:             true,
		NoLog:              o.Logger == nil,
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = 4222
	}
	if opts.JetStreamMaxMemory == 0 {
		opts.JetStreamMaxMemory = 256 << 20
	}
	if opts.JetStreamMaxStore == 0 {
		opts.JetStreamMaxStore = 4 << 30
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if o.Logger != nil {
		s.SetLoggerV2(o.Logger, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server on %s:%d: not ready after 10s (port in use?)", opts.Host, opts.Port)
	}
	return s, nil
}
