package cairnjs_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// freezer is a TCP proxy in front of a server. freeze makes the connections open at that
// moment stop forwarding in both directions while staying open: to the client the server
// looks hung, as a SIGSTOPped one does. Connections opened later forward normally.
type freezer struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen []chan struct{} // per open connection, closed to freeze it
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		f.freeze()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			stop := make(chan struct{})
			f.mu.Lock()
			f.frozen = append(f.frozen, stop)
			f.mu.Unlock()
			conns.Go(func() { pipe(c, s, stop) })
		}
	}()
	return f
}

// pipe forwards between a and b until stop is closed, then leaves both open, unread,
// until the other side gives up; it closes them once the client closed its end.
func pipe(a, b net.Conn, stop <-chan struct{}) {
	forward := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			select {
			case <-stop:
				return // frozen: what was read is dropped, nothing more is read
			default:
			}
			if n > 0 {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	done := make(chan struct{}, 2)
	go func() { forward(b, a); done <- struct{}{} }()
	go func() { forward(a, b); done <- struct{}{} }()
	<-done
	<-stop
	// Frozen or ended: hold the sockets open without reading until the client hangs up.
	_, _ = io.Copy(io.Discard, a)
	a.Close()
	b.Close()
	<-done
}

// freeze stops forwarding on every connection open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, stop := range f.frozen {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	f.frozen = nil
}

func (f *freezer) url() string { return "nats://" + f.ln.Addr().String() }

// TestConnectLeavesAHungServer: a connection whose server stops answering (the TCP
// connection stays open, nothing comes back) is given up as stale within HungServerBound,
// and Connect's connection reconnects on its own.
func TestConnectLeavesAHungServer(t *testing.T) {
	s := natstest.Start(t)
	f := newFreezer(t, strings.TrimPrefix(s.URL, "nats://"))
	disconnected := make(chan error, 4)
	reconnected := make(chan string, 4)
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{
		URLs: f.url(), Name: t.Name(),
		OnDisconnect: func(err error) { disconnected <- err },
		OnReconnect:  func(url string) { reconnected <- url },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if nc.Opts.PingInterval != cairnjs.PingInterval || nc.Opts.MaxPingsOut != cairnjs.MaxPingsOutstanding {
		t.Fatalf("ping every %s, %d outstanding; want %s, %d", nc.Opts.PingInterval, nc.Opts.MaxPingsOut, cairnjs.PingInterval, cairnjs.MaxPingsOutstanding)
	}

	f.freeze()
	frozen := time.Now()
	// The bound plus a margin for a loaded machine; nats.go's defaults take minutes.
	limit := time.NewTimer(cairnjs.HungServerBound + 5*time.Second)
	defer limit.Stop()
	select {
	case err := <-disconnected:
		left := time.Since(frozen)
		t.Logf("hung server left after %s (bound %s): %v", left.Round(10*time.Millisecond), cairnjs.HungServerBound, err)
		if !errors.Is(err, nats.ErrStaleConnection) {
			t.Fatalf("disconnected with %v, want %v", err, nats.ErrStaleConnection)
		}
	case <-limit.C:
		t.Fatalf("the connection still holds on to the hung server %s after the freeze", time.Since(frozen).Round(time.Millisecond))
	}
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect within 10 s after leaving the hung server")
	}
	if _, err := nc.Request("no.responder", nil, 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a request after the reconnect: %v, want %v (the server answered)", err, nats.ErrNoResponders)
	}
}

func TestConnectRefusesBadCredentials(t *testing.T) {
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountSeed, err := account.Seed()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts cairnjs.ConnectOptions
		want string
	}{
		{"user and nkey", cairnjs.ConnectOptions{User: "u", NKeySeed: "SUx"}, cairnjs.ErrConflictingAuth.Error()},
		{"nkey file and seed", cairnjs.ConnectOptions{NKeyFile: "f", NKeySeed: "SUx"}, cairnjs.ErrConflictingAuth.Error()},
		{"creds and nkey file", cairnjs.ConnectOptions{Creds: "c", NKeyFile: "f"}, cairnjs.ErrConflictingAuth.Error()},
		{"not a seed", cairnjs.ConnectOptions{NKeySeed: "not a seed"}, "nkey seed"},
		{"an account's seed", cairnjs.ConnectOptions{NKeySeed: string(accountSeed)}, "not a user seed"},
		{"missing seed file", cairnjs.ConnectOptions{NKeyFile: "/nonexistent/seed.nk"}, "nkey seed file"},
		{"inbox prefix with a wildcard", cairnjs.ConnectOptions{InboxPrefix: "_INBOX.*"}, "invalid custom prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := cairnjs.Connect(tc.opts)
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(tc.want, "give one of") && !errors.Is(err, cairnjs.ErrConflictingAuth) {
				t.Fatalf("Connect = %v, want ErrConflictingAuth", err)
			}
		})
	}
}
