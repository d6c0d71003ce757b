package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultURL is the address `cairn health` probes when given none.
const DefaultURL = "http://127.0.0.1:9090" + Path

// DefaultTimeout bounds a Check whose ctx has no deadline.
const DefaultTimeout = 5 * time.Second

// ErrUnhealthy is returned (wrapped, with the status and the body's first line) when the
// endpoint answers with a status other than 200.
var ErrUnhealthy = errors.New("unhealthy")

// maxBody is how much of an unhealthy answer Check quotes.
const maxBody = 512

// Check sends GET url and returns nil when the answer is 200 OK. Otherwise it returns an
// error saying why: the request could not be made or sent (no server, refused, timed out),
// or ErrUnhealthy wrapped with the status and the start of the body. When ctx has no
// deadline Check gives up after DefaultTimeout.
func Check(ctx context.Context, url string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health check %s: %w", url, err)
	}
	client := &http.Client{
		// A probe must not follow a redirect to somewhere else and call that healthy.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if msg == "" {
		return fmt.Errorf("health check %s: %w: %s", url, ErrUnhealthy, resp.Status)
	}
	return fmt.Errorf("health check %s: %w: %s: %s", url, ErrUnhealthy, resp.Status, msg)
}
