package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cairn-stream/cairn/internal/health"
)

func runHealth(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn health", flag.ContinueOnError)
	url := fs.String("url", envOr("CAIRN_HEALTH_URL", "http://127.0.0.1:9090"+health.Path), "health endpoint to probe [$CAIRN_HEALTH_URL]")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := health.Check(ctx, *url); err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	fmt.Fprintln(os.Stdout, "ok")
	return nil
}
