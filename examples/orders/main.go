package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/operator"
)

// Totals is one region's aggregate.
type Totals struct {
	Count  int64 `json:"count"`
	Amount int64 `json:"amount"`
}

// Orders is the Machine: the totals per region. The runtime calls it on one goroutine.
type Orders struct{ totals map[string]Totals }

// Apply adds one order {"amount":N} published on orders.<region>.<channel>.
func (o *Orders) Apply(rec operator.Record) error {
	var order struct {
		Amount int64 `json:"amount"`
	}
	if err := json.Unmarshal(rec.Data, &order); err != nil {
		return err // counted as rejected and skipped
	}
	region := strings.Split(rec.Subject, ".")[1]
	t := o.totals[region]
	o.totals[region] = Totals{Count: t.Count + 1, Amount: t.Amount + order.Amount}
	return nil
}

// Snapshot encodes the totals now: the bytes share nothing with the map Apply changes.
func (o *Orders) Snapshot() (operator.Snapshot, error) {
	b, err := json.Marshal(o.totals) // keys sorted: equal states give equal bytes
	return operator.BytesSnapshot(b), err
}

// Restore replaces the totals with a snapshot's, or leaves them when it fails.
func (o *Orders) Restore(r io.Reader) error {
	totals := map[string]Totals{}
	if err := json.NewDecoder(r).Decode(&totals); err != nil {
		return err
	}
	o.totals = totals
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// NATS_URL, and the credential cairn auth gives: NATS_NKEY_SEED, NATS_INBOX_PREFIX, NATS_CA.
	conn := cairnjs.ConnectOptionsFromEnv("orders-" + os.Getenv("INSTANCE"))
	if err := run(ctx, conn, os.Getenv("INSTANCE"), log); err != nil {
		log.Error("orders operator failed", "error", err)
		os.Exit(1)
	}
}

// run runs instance until ctx ends, answering cairn.op.orders.<instance>.totals.
func run(ctx context.Context, opts cairnjs.ConnectOptions, instance string, log *slog.Logger) error {
	nc, err := cairnjs.Connect(opts) // reconnects for ever, leaves a hung server within 9 s; no URL is nats://127.0.0.1:4222
	if err != nil {
		return err
	}
	defer nc.Close()

	cfg := operator.DefaultConfig("orders", instance) // job, stable instance id
	cfg.InputStream = "ORDERS"
	cfg.InputFilters = []string{"orders.eu.>", "orders.us.>"}
	cfg.Logger = log
	orders := &Orders{totals: map[string]Totals{}}
	rt, err := operator.New(nc, cfg, orders)
	if err != nil {
		return err
	}
	err = rt.AddEndpoint("totals", "cairn.op.orders."+instance+".totals", micro.HandlerFunc(func(req micro.Request) {
		var b []byte
		if err := rt.Do(ctx, func() { b, _ = json.Marshal(orders.totals) }); err != nil {
			_ = req.Error("503", err.Error(), nil)
			return
		}
		_ = req.Respond(b)
	}))
	if err != nil {
		return err
	}
	return rt.Run(ctx) // waits for ORDERS and Cairn's buckets, restores, then runs
}
