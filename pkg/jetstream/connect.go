package jetstream

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Environment variables read by ConnectOptionsFromEnv.
const (
	EnvURL      = "NATS_URL"
	EnvUser     = "NATS_USER"
	EnvPassword = "NATS_PASSWORD"
	EnvCreds    = "NATS_CREDS"
)

// ConnectOptions says where and how to connect.
type ConnectOptions struct {
	// URLs is a comma-separated list of seed URLs; empty means nats.DefaultURL.
	URLs string
	// User and Password authenticate with a user name; exclusive with Creds.
	User     string
	Password string
	// Creds is the path of a credentials file; exclusive with User.
	Creds string
	// Name is the connection name shown in server monitoring.
	Name string
	// ReconnectWait is the base wait between reconnect attempts; it grows with each failed
	// attempt up to 2s, with jitter. 0 means 250ms.
	ReconnectWait time.Duration
	// OnDisconnect, OnReconnect and OnClosed, when set, are called on those events.
	OnDisconnect func(error)
	OnReconnect  func(url string)
	OnClosed     func()
	// Extra are further nats.go options, applied last (tests pass nats.InProcessServer).
	Extra []nats.Option
}

// ConnectOptionsFromEnv fills URLs and credentials from NATS_URL, NATS_USER,
// NATS_PASSWORD and NATS_CREDS.
func ConnectOptionsFromEnv(name string) ConnectOptions {
	return ConnectOptions{
		URLs:     os.Getenv(EnvURL),
		User:     os.Getenv(EnvUser),
		Password: os.Getenv(EnvPassword),
		Creds:    os.Getenv(EnvCreds),
		Name:     name,
	}
}

// Liveness of a connection: the client pings its server every PingInterval and gives the
// connection up as stale when MaxPingsOutstanding pings are unanswered at the next tick, so
// a server that hangs (SIGSTOP, a frozen VM, a half-open TCP connection) is left between
// MaxPingsOutstanding and MaxPingsOutstanding+1 intervals after its last answer: 6 to 9 s.
// nats.go's defaults (2 minutes, 2) take 4 to 6 minutes. HungServerBound is that worst
// case.
const (
	PingInterval        = 3 * time.Second
	MaxPingsOutstanding = 2
	HungServerBound     = (MaxPingsOutstanding + 1) * PingInterval
)

// ErrConflictingAuth is returned when both a user and a credentials file are given.
var ErrConflictingAuth = errors.New("give either NATS_USER/NATS_PASSWORD or NATS_CREDS, not both")

// Connect connects to NATS. It retries the first connection and reconnects forever with
// jittered backoff, so a service started before its server, or outliving a server restart,
// carries on without operator action. It pings the server every PingInterval and leaves
// one that stops answering within HungServerBound, for the next seed URL or a server the
// cluster announced (nats.go adds those to its pool; the pool is shuffled, so the seeds'
// order is no preference).
func Connect(o ConnectOptions) (*nats.Conn, error) {
	if o.User != "" && o.Creds != "" {
		return nil, ErrConflictingAuth
	}
	urls := o.URLs
	if strings.TrimSpace(urls) == "" {
		urls = nats.DefaultURL
	}
	wait := o.ReconnectWait
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := min(wait*time.Duration(min(attempts, 8)), 2*time.Second)
			return d/2 + rand.N(d/2+1)
		}),
		nats.ReconnectBufSize(8 << 20),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOutstanding),
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.OnDisconnect != nil {
		opts = append(opts, nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { o.OnDisconnect(err) }))
	}
	if o.OnReconnect != nil {
		opts = append(opts, nats.ReconnectHandler(func(nc *nats.Conn) { o.OnReconnect(nc.ConnectedUrlRedacted()) }))
	}
	if o.OnClosed != nil {
		opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { o.OnClosed() }))
	}
	opts = append(opts, o.Extra...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", urls, err)
	}
	return nc, nil
}
