package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// Names of the sink's streams.
const (
	InputStream  = "KSINK_IN"
	OutputStream = "KSINK_OUT"
	// HeaderSeq carries a write's input sequence.
	HeaderSeq = "Sink-Input-Sequence"
)

// Write is one pending write, stored under pending/<input sequence>.
type Write struct {
	Data json.RawMessage `json:"data"`
	// Checkpoint is the checkpoint whose state holds the write; 0 until one does.
	Checkpoint uint64 `json:"checkpoint,omitempty"`
}

// Sink is the KeyedMachine. It publishes its writes on the processing goroutine, from
// CheckpointCompleted.
type Sink struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	instance string
	subject  string
	log      *slog.Logger
	// st is the Keyed's store, for the listener.
	st *state.Store
	// mark is the input sequence of the newest write KSINK_OUT holds on the subject,
	// read before the first publish of this run (marked).
	mark   uint64
	marked bool
}

var (
	_ operator.KeyedMachine       = (*Sink)(nil)
	_ operator.KeyedSnapshotter   = (*Sink)(nil)
	_ operator.CheckpointListener = (*Sink)(nil)
)

// sums and pending are the sink's views of the store.
func sums(st *state.Store) *state.Map[int64] { return state.NewMap(st, "sum/", state.Int64) }
func pending(st *state.Store) *state.Map[Write] {
	return state.NewMap(st, "pending/", state.JSON[Write]())
}

// pendingKey orders the writes by input sequence.
func pendingKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// Apply adds an event to its key's sum and stores the write, pending.
func (s *Sink) Apply(rec operator.Record, st *state.Store) error {
	var ev struct {
		Key   string `json:"key"`
		Value int64  `json:"value"`
	}
	if err := json.Unmarshal(rec.Data, &ev); err != nil || ev.Key == "" {
		return fmt.Errorf("event %s: want {\"key\":\"...\",\"value\":N}", rec.Data)
	}
	sum, _, err := sums(st).Get(ev.Key)
	if err != nil {
		return err
	}
	sum += ev.Value
	if err := sums(st).Put(ev.Key, sum); err != nil {
		return err
	}
	data, err := json.Marshal(map[string]any{"key": ev.Key, "value": ev.Value, "sum": sum})
	if err != nil {
		return err
	}
	return pending(st).Put(pendingKey(rec.Sequence), Write{Data: data})
}

// SnapshotFor tags the pending writes not yet tagged with checkpoint id: the tags go into
// that checkpoint.
func (s *Sink) SnapshotFor(id uint64, st *state.Store) error {
	p := pending(st)
	untagged := map[string]Write{}
	if err := p.Range(func(k string, w Write) bool {
		if w.Checkpoint == 0 {
			w.Checkpoint = id
			untagged[k] = w
		}
		return true
	}); err != nil {
		return err
	}
	for k, w := range untagged {
		if err := p.Put(k, w); err != nil {
			return err
		}
	}
	return nil
}

// CheckpointCompleted publishes, in input order, the writes tagged with id or an older
// checkpoint that KSINK_OUT does not hold yet, and deletes them from the store. A write
// that cannot be stored within publishBudget stays pending with those after it, and the
// next completion publishes them.
func (s *Sink) CheckpointCompleted(id uint64) {
	p := pending(s.st)
	var due []string
	writes := map[string]Write{}
	if err := p.Range(func(k string, w Write) bool {
		if w.Checkpoint == 0 || w.Checkpoint > id {
			return false
		}
		due, writes[k] = append(due, k), w
		return true
	}); err != nil {
		s.log.Error("pending writes unreadable", "error", err)
		return
	}
	if len(due) > 0 && !s.marked {
		if err := s.readMark(); err != nil {
			s.log.Error("last write not read; the writes wait for the next completion", "error", err)
			return
		}
	}
	for _, k := range due {
		seq, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			s.log.Error("pending write with a bad key dropped", "key", k)
			p.Delete(k)
			continue
		}
		if seq > s.mark {
			if err := s.publish(seq, writes[k]); err != nil {
				s.log.Error("write not stored; kept for the next completion", "seq", seq, "error", err)
				return
			}
			s.mark = seq
		}
		p.Delete(k)
	}
}

// CheckpointAborted keeps the writes: a later checkpoint covers them.
func (s *Sink) CheckpointAborted(uint64, string) {}

// publishBudget bounds the attempts to read the mark or store one write.
const publishBudget = 30 * time.Second

// readMark reads the input sequence of the last write on the sink's subject, from the
// stream leader.
func (s *Sink) readMark() error {
	ctx, cancel := context.WithTimeout(context.Background(), publishBudget)
	defer cancel()
	return retry.Do(ctx, func(ctx context.Context) error {
		m, err := cairnjs.LastMsgCurrent(ctx, s.nc, OutputStream, s.subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			s.mark, s.marked = 0, true
			return nil
		case err != nil:
			return err
		}
		seq, err := strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64)
		if err != nil {
			return fmt.Errorf("last write on %s (stream sequence %d) has no %s header: %w", s.subject, m.Sequence, HeaderSeq, err)
		}
		s.mark, s.marked = seq, true
		return nil
	}, func(err error, wait time.Duration) {
		s.log.Warn("last write not read; retrying", "error", err, "retry_in", wait)
	})
}

// publish stores the write of input sequence seq, retrying with the runtime's backoff.
func (s *Sink) publish(seq uint64, w Write) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishBudget)
	defer cancel()
	msg := nats.NewMsg(s.subject)
	msg.Data = w.Data
	msg.Header.Set(HeaderSeq, strconv.FormatUint(seq, 10))
	return retry.Do(ctx, func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := s.js.PublishMsg(pctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s.%d", s.instance, seq)))
		return err
	}, func(err error, wait time.Duration) {
		s.log.Warn("write not stored; retrying", "seq", seq, "error", err, "retry_in", wait)
	})
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Getenv("NATS_URL"), os.Getenv("INSTANCE"), log); err != nil {
		log.Error("keyedsink failed", "error", err)
		os.Exit(1)
	}
}

// run runs the sink instance until ctx ends.
func run(ctx context.Context, url, instance string, log *slog.Logger) error {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sink := &Sink{nc: nc, js: js, instance: instance, subject: "ksink.out." + instance, log: log}
	k, err := operator.NewKeyed(sink, operator.KeyedConfig{})
	if err != nil {
		return err
	}
	sink.st = k.Store() // the listener's way to the store
	cfg := operator.DefaultConfig("keyedsink", instance)
	cfg.InputStream = InputStream
	cfg.InputFilters = []string{"ksink.in." + instance}
	cfg.Logger = log
	return operator.Run(ctx, nc, cfg, k)
}
