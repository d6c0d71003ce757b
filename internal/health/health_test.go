package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startServe runs serve on a free 127.0.0.1 port until the test ends and returns the
// /healthz URL.
func startServe(t *testing.T, ready func() error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	})
	return "http://" + ln.Addr().String() + Path
}

func TestServeAnswersFromReady(t *testing.T) {
	var state atomic.Pointer[error]
	url := startServe(t, func() error {
		if p := state.Load(); p != nil {
			return *p
		}
		return nil
	})
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantBody   string
	}{
		{name: "ready", wantStatus: http.StatusOK, wantBody: "ok\n"},
		{name: "not ready", err: errors.New("nats: not connected"), wantStatus: http.StatusServiceUnavailable, wantBody: "nats: not connected\n"},
		{name: "ready again", wantStatus: http.StatusOK, wantBody: "ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err != nil {
				state.Store(&tt.err)
			} else {
				state.Store(nil)
			}
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || string(body) != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			err = Check(context.Background(), url)
			if (tt.err == nil) != (err == nil) {
				t.Fatalf("Check = %v, want error %v", err, tt.err != nil)
			}
			if tt.err != nil && (!errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), tt.err.Error())) {
				t.Fatalf("Check = %v, want ErrUnhealthy quoting %q", err, tt.err)
			}
		})
	}
}

func TestServeRoutes(t *testing.T) {
	url := startServe(t, func() error { return nil })
	base := strings.TrimSuffix(url, Path)
	tests := []struct {
		name, method, path string
		want               int
	}{
		{name: "get", method: http.MethodGet, path: Path, want: http.StatusOK},
		{name: "head", method: http.MethodHead, path: Path, want: http.StatusOK},
		{name: "post", method: http.MethodPost, path: Path, want: http.StatusMethodNotAllowed},
		{name: "other path", method: http.MethodGet, path: "/metrics", want: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			}
		})
	}
}

func TestServeReturnsWhenContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", func() error { return nil }) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
}

func TestServeReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(context.Background(), ln.Addr().String(), func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Serve on a taken port = %v, want a listen error", err)
	}
	if err := Serve(context.Background(), "127.0.0.1:0", nil); err == nil {
		t.Fatal("Serve with a nil ready func = nil, want an error")
	}
}

func TestCheckFailures(t *testing.T) {
	redirect := httptest.NewServer(http.RedirectHandler("/elsewhere", http.StatusFound))
	t.Cleanup(redirect.Close)
	empty503 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(empty503.Close)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + closed.Addr().String() + Path
	closed.Close()

	tests := []struct {
		name      string
		url       string
		timeout   time.Duration
		unhealthy bool
		want      string
	}{
		{name: "refused", url: refusedURL, want: "refused"},
		{name: "bad url", url: "://nope", want: "missing protocol scheme"},
		{name: "redirect is not healthy", url: redirect.URL + Path, unhealthy: true, want: "302"},
		{name: "503 without body", url: empty503.URL + Path, unhealthy: true, want: "503 Service Unavailable"},
		{name: "deadline", url: hang.URL + Path, timeout: 100 * time.Millisecond, want: "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			err := Check(ctx, tt.url)
			if err == nil {
				t.Fatal("Check = nil, want an error")
			}
			if errors.Is(err, ErrUnhealthy) != tt.unhealthy {
				t.Fatalf("Check = %v; errors.Is(ErrUnhealthy) = %v, want %v", err, !tt.unhealthy, tt.unhealthy)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
