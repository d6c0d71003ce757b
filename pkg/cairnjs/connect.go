package cairnjs

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Environment variables read by ConnectOptionsFromEnv.
const (
	EnvURL      = "NATS_URL"
	EnvUser     = "NATS_USER"
	EnvPassword = "NATS_PASSWORD"
	EnvCreds    = "NATS_CREDS"
	// EnvNKey names a file holding an nkey seed (as `cairn auth` writes them).
	EnvNKey = "NATS_NKEY"
	// EnvNKeySeed holds an nkey seed itself (compose passes it so).
	EnvNKeySeed = "NATS_NKEY_SEED"
	// EnvCA names the PEM file of the certificate authorities that sign the server's
	// certificate; the client then verifies the server against them (and only them).
	EnvCA = "NATS_CA"
	// EnvInboxPrefix is the prefix of the client's reply subjects instead of _INBOX: a
	// credential from `cairn auth` may subscribe to its own prefix only.
	EnvInboxPrefix = "NATS_INBOX_PREFIX"
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
	// NKeyFile is the path of a file holding an nkey seed, NKeySeed a seed itself:
	// authenticate as that nkey's public key. Each is exclusive with the other ways.
	NKeyFile string
	NKeySeed string
	// CA is the path of a PEM file of certificate authorities: the server's certificate
	// must be signed by one of them (TLS). Empty: TLS only if a URL says tls:// or the
	// server requires it, verified against the system's roots.
	CA string
	// InboxPrefix replaces _INBOX as the prefix of the connection's reply subjects; empty
	// keeps _INBOX.
	InboxPrefix string
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

// ConnectOptionsFromEnv fills URLs, credentials, the CA and the inbox prefix from
// NATS_URL, NATS_USER, NATS_PASSWORD, NATS_CREDS, NATS_NKEY, NATS_NKEY_SEED, NATS_CA and
// NATS_INBOX_PREFIX.
func ConnectOptionsFromEnv(name string) ConnectOptions {
	return ConnectOptions{
		URLs:        os.Getenv(EnvURL),
		User:        os.Getenv(EnvUser),
		Password:    os.Getenv(EnvPassword),
		Creds:       os.Getenv(EnvCreds),
		NKeyFile:    os.Getenv(EnvNKey),
		NKeySeed:    os.Getenv(EnvNKeySeed),
		CA:          os.Getenv(EnvCA),
		InboxPrefix: os.Getenv(EnvInboxPrefix),
		Name:        name,
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

// ErrConflictingAuth is returned when more than one way to authenticate is given.
var ErrConflictingAuth = errors.New("give one of NATS_USER/NATS_PASSWORD, NATS_CREDS, NATS_NKEY or NATS_NKEY_SEED, not several")

// authOptions returns the nats.go options of o's one way to authenticate (none: no
// option).
func (o ConnectOptions) authOptions() ([]nats.Option, error) {
	given := 0
	for _, v := range []string{o.User, o.Creds, o.NKeyFile, o.NKeySeed} {
		if v != "" {
			given++
		}
	}
	switch {
	case given > 1:
		return nil, ErrConflictingAuth
	case o.User != "":
		return []nats.Option{nats.UserInfo(o.User, o.Password)}, nil
	case o.Creds != "":
		return []nats.Option{nats.UserCredentials(o.Creds)}, nil
	case o.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", o.NKeyFile, err)
		}
		return []nats.Option{opt}, nil
	case o.NKeySeed != "":
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(o.NKeySeed)))
		if err != nil {
			return nil, fmt.Errorf("nkey seed: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("nkey seed: %w", err)
		}
		if !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("nkey seed: not a user seed (public key %s); a user seed starts with SU", pub)
		}
		return []nats.Option{nats.Nkey(pub, kp.Sign)}, nil
	}
	return nil, nil
}

// Connect connects to NATS. It retries the first connection and reconnects forever with
// jittered backoff, so a service started before its server, or outliving a server restart,
// carries on without operator action. It pings the server every PingInterval and leaves
// one that stops answering within HungServerBound, for the next seed URL or a server the
// cluster announced (nats.go adds those to its pool; the pool is shuffled, so the seeds'
// order is no preference).
func Connect(o ConnectOptions) (*nats.Conn, error) {
	auth, err := o.authOptions()
	if err != nil {
		return nil, err
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
	opts = append(opts, auth...)
	if o.CA != "" {
		opts = append(opts, nats.RootCAs(o.CA))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
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
