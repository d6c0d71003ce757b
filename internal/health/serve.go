package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Path is the URL path Serve answers on.
const Path = "/healthz"

// shutdownGrace bounds how long Serve waits for in-flight probes once ctx is done.
const shutdownGrace = 2 * time.Second

// Serve listens on addr (host:port) and answers GET /healthz with 200 "ok" while ready
// returns nil, and with 503 and the error's text otherwise. ready is called once per
// request and must be safe for concurrent use. Serve returns nil once ctx is done and the
// server has shut down, or the error that kept it from listening or serving.
func Serve(ctx context.Context, addr string, ready func() error) error {
	if ready == nil {
		return errors.New("health: ready func is nil")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("health: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, ready)
}

// serve runs the health server on ln until ctx is done; it closes ln.
func serve(ctx context.Context, ln net.Listener, ready func() error) error {
	srv := &http.Server{
		Handler:           handler(ready),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("health: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// handler answers GET (and HEAD) /healthz from ready.
func handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, err.Error()+"\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}
