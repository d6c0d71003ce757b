package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/health"
	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// common holds the flags every service command shares.
type common struct {
	natsURL    string
	user       string
	password   string
	creds      string
	logLevel   string
	healthAddr string
	prefix     string
	replicas   int
	// nkey, nkeySeed, ca and inboxPrefix are the nkey credential, the CA that verifies
	// the server, and the reply subject prefix (cairnjs.ConnectOptions).
	nkey        string
	nkeySeed    string
	ca          string
	inboxPrefix string
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func envInt(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return n
	}
	return def
}

// envBool reads a boolean environment variable; unset or empty means false.
func envBool(key string) (bool, error) {
	v := os.Getenv(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: allowed: true, false, 1, 0", key, v)
	}
	return b, nil
}

// register adds the shared flags, each defaulting to its environment variable.
func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats-url", envOr(cairnjs.EnvURL, nats.DefaultURL), "NATS seed URLs, comma-separated [$NATS_URL]")
	fs.StringVar(&c.user, "user", os.Getenv(cairnjs.EnvUser), "NATS user [$NATS_USER]")
	fs.StringVar(&c.password, "password", os.Getenv(cairnjs.EnvPassword), "NATS password [$NATS_PASSWORD]")
	fs.StringVar(&c.creds, "creds", os.Getenv(cairnjs.EnvCreds), "NATS credentials file [$NATS_CREDS]")
	fs.StringVar(&c.nkey, "nkey", os.Getenv(cairnjs.EnvNKey), "file holding the NATS user's nkey seed, e.g. one cairn auth wrote [$NATS_NKEY]")
	c.nkeySeed = os.Getenv(cairnjs.EnvNKeySeed) // a secret: from the environment only, never a flag
	fs.StringVar(&c.ca, "ca", os.Getenv(cairnjs.EnvCA), "PEM file of the CA that signed the NATS server's certificate: connect with TLS and verify the server against it [$NATS_CA]")
	fs.StringVar(&c.inboxPrefix, "inbox-prefix", os.Getenv(cairnjs.EnvInboxPrefix), "prefix of reply subjects instead of _INBOX; cairn auth gives each user its own [$NATS_INBOX_PREFIX]")
	fs.StringVar(&c.logLevel, "log-level", os.Getenv("LOG_LEVEL"), "trace, debug, info, warn or error; empty means info [$LOG_LEVEL]")
	fs.StringVar(&c.healthAddr, "health-addr", os.Getenv("CAIRN_HEALTH_ADDR"), "serve GET /healthz on this host:port; empty: off [$CAIRN_HEALTH_ADDR]")
	fs.StringVar(&c.prefix, "prefix", envOr("CAIRN_PREFIX", cairnjs.DefaultPrefix), "subject prefix [$CAIRN_PREFIX]")
	fs.IntVar(&c.replicas, "replicas", envInt("CAIRN_REPLICAS", 1), "replicas of the streams, buckets and object store created when missing [$CAIRN_REPLICAS]")
}

// parse parses args into fs, reporting errors on stderr.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}

// newLogger builds the process logger: JSON on stderr, or a console writer for dev.
// Timestamps carry milliseconds: barriers 100ms apart must be told apart in the logs.
func newLogger(level string, console bool, stderr io.Writer) (zerolog.Logger, error) {
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(strings.ToLower(level))
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log level %q: allowed: trace, debug, info, warn, error", level)
		}
		lvl = l
	}
	var w io.Writer = stderr
	if console {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000", NoColor: !isTerminal(stderr) || os.Getenv("NO_COLOR") != ""}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// subjects returns the subject builder for the prefix flag.
func (c *common) subjects() cairnjs.Subjects { return cairnjs.Subjects{Prefix: c.prefix} }

// connect connects with reconnect-forever and logs connection events.
func (c *common) connect(name string, log zerolog.Logger) (*nats.Conn, error) {
	return cairnjs.Connect(cairnjs.ConnectOptions{
		URLs: c.natsURL, User: c.user, Password: c.password, Creds: c.creds, NKeyFile: c.nkey, NKeySeed: c.nkeySeed,
		CA: c.ca, InboxPrefix: c.inboxPrefix, Name: name,
		OnDisconnect: func(err error) {
			if err == nil {
				log.Debug().Msg("disconnected from NATS")
				return
			}
			log.Warn().Err(err).Msg("disconnected from NATS")
		},
		OnReconnect: func(url string) { log.Info().Str("url", url).Msg("reconnected to NATS") },
		OnClosed:    func() { log.Debug().Msg("NATS connection closed") },
	})
}

// setup connects and gets the resources, retrying until they are there or ctx ends.
// lookupOnly services never create resources; only, when not empty, names the resources
// the service uses (it needs no rights on the others).
func (c *common) setup(ctx context.Context, name string, lookupOnly bool, only []string, log zerolog.Logger) (*nats.Conn, jetstream.JetStream, *cairnjs.Resources, error) {
	nc, err := c.connect(name, log)
	if err != nil {
		return nil, nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	res, err := ensureResources(ctx, js, cairnjs.Options{Subjects: c.subjects(), Replicas: c.replicas, LookupOnly: lookupOnly, Only: only}, log)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	return nc, js, res, nil
}

// ensureResources retries cairnjs.Ensure with retry.Do's backoff until it succeeds or ctx ends.
func ensureResources(ctx context.Context, js jetstream.JetStream, o cairnjs.Options, log zerolog.Logger) (*cairnjs.Resources, error) {
	var res *cairnjs.Resources
	err := retry.Do(ctx, func(ctx context.Context) error {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		res, err = cairnjs.Ensure(ectx, js, o)
		return err
	}, func(err error, wait time.Duration) {
		log.Warn().Err(err).Dur("retry_in", wait).Msg("JetStream resources not ready")
	})
	if err != nil {
		return nil, fmt.Errorf("stopped while resources were not ready: %w", err)
	}
	return res, nil
}

// serveHealth serves /healthz on the health address, if one is set, reporting ready while
// the NATS connection is up and every check returns nil. It returns at once; the server
// stops with ctx.
func (c *common) serveHealth(ctx context.Context, nc *nats.Conn, log zerolog.Logger, checks ...func() error) {
	if c.healthAddr == "" {
		return
	}
	ready := func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS connection %s", nc.Status())
		}
		for _, check := range checks {
			if err := check(); err != nil {
				return err
			}
		}
		return nil
	}
	go func() {
		if err := health.Serve(ctx, c.healthAddr, ready); err != nil {
			log.Error().Err(err).Str("addr", c.healthAddr).Msg("health server stopped")
		}
	}()
}

// drain drains the connection, bounded, after a service stopped.
func drain(nc *nats.Conn) {
	done := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		nc.Close()
	}
}

// isTerminal reports whether w is a character device (a terminal), where colours help.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
