package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/operator"
)

// Write is one buffered output.
type Write struct {
	// ID is the Nats-Msg-Id: the instance and the input sequence.
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
	// Checkpoint is the checkpoint whose snapshot covers the write; 0 until one does.
	Checkpoint uint64 `json:"checkpoint,omitempty"`
}

// state is what a snapshot holds.
type state struct {
	Sums    map[string]int64 `json:"sums"`
	Pending []Write          `json:"pending"`
}

// Sink is the Machine. It publishes its writes on the processing goroutine, from
// CheckpointCompleted.
type Sink struct {
	js       jetstream.JetStream
	instance string
	subject  string
	st       state
}

var (
	_ operator.CheckpointListener    = (*Sink)(nil)
	_ operator.CheckpointSnapshotter = (*Sink)(nil)
)

// NewSink returns an empty sink of instance that publishes to subject through js.
func NewSink(js jetstream.JetStream, instance, subject string) *Sink {
	return &Sink{js: js, instance: instance, subject: subject, st: state{Sums: map[string]int64{}}}
}

// Apply adds an event to its key's sum and buffers the write.
func (s *Sink) Apply(rec operator.Record) error {
	var ev struct {
		Key   string `json:"key"`
		Value int64  `json:"value"`
	}
	if err := json.Unmarshal(rec.Data, &ev); err != nil || ev.Key == "" {
		return fmt.Errorf("event %s: want {\"key\":\"...\",\"value\":N}", rec.Data)
	}
	s.st.Sums[ev.Key] += ev.Value
	data, err := json.Marshal(map[string]any{"key": ev.Key, "value": ev.Value, "sum": s.st.Sums[ev.Key]})
	if err != nil {
		return err
	}
	s.st.Pending = append(s.st.Pending, Write{ID: fmt.Sprintf("%s.%d", s.instance, rec.Sequence), Data: data})
	return nil
}

// Snapshot is not called: the runtime calls SnapshotFor.
func (s *Sink) Snapshot() (operator.Snapshot, error) {
	return nil, errors.New("txsink: snapshots need the checkpoint id (SnapshotFor)")
}

// SnapshotFor tags the writes not yet covered with checkpoint id and encodes the state.
func (s *Sink) SnapshotFor(id uint64) (operator.Snapshot, error) {
	for i := range s.st.Pending {
		if s.st.Pending[i].Checkpoint == 0 {
			s.st.Pending[i].Checkpoint = id
		}
	}
	b, err := json.Marshal(s.st)
	return operator.BytesSnapshot(b), err
}

// Restore replaces the state with a snapshot's.
func (s *Sink) Restore(r io.Reader) error {
	var st state
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return err
	}
	if st.Sums == nil {
		st.Sums = map[string]int64{}
	}
	s.st = st
	return nil
}

// CheckpointCompleted publishes the writes checkpoint id covers, in order, and drops
// them from the buffer. A write that cannot be stored within publishBudget stays
// buffered with those after it, and the next completion publishes them.
func (s *Sink) CheckpointCompleted(id uint64) {
	n := 0
	for _, w := range s.st.Pending {
		if w.Checkpoint == 0 || w.Checkpoint > id {
			break
		}
		if err := s.publish(w); err != nil {
			slog.Error("write not stored; kept for the next completion", "id", w.ID, "error", err)
			break
		}
		n++
	}
	s.st.Pending = s.st.Pending[n:]
}

// CheckpointAborted keeps the writes: a later checkpoint covers them.
func (s *Sink) CheckpointAborted(uint64, string) {}

// publishBudget bounds the attempts to store one write.
const publishBudget = 30 * time.Second

// publish stores w under its message id, retrying with the runtime's backoff.
func (s *Sink) publish(w Write) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishBudget)
	defer cancel()
	return retry.Do(ctx, func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := s.js.Publish(pctx, s.subject, w.Data, jetstream.WithMsgID(w.ID))
		return err
	}, func(err error, wait time.Duration) {
		slog.Warn("write not stored; retrying", "id", w.ID, "error", err, "retry_in", wait)
	})
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Getenv("NATS_URL"), os.Getenv("INSTANCE"), log); err != nil {
		log.Error("txsink failed", "error", err)
		os.Exit(1)
	}
}

// run runs the sink instance until ctx ends.
func run(ctx context.Context, url, instance string, log *slog.Logger) error {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.PingInterval(3*time.Second), nats.MaxPingsOutstanding(2))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := operator.DefaultConfig("txsink", instance)
	cfg.InputStream = "SINK_IN"
	cfg.InputFilters = []string{"sink.in." + instance}
	cfg.Logger = log
	return operator.Run(ctx, nc, cfg, NewSink(js, instance, "sink.out."+instance))
}
