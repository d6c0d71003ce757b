package operator

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrInvalidConfig is returned (wrapped) by Config.Validate and New for a config that
// cannot run.
var ErrInvalidConfig = errors.New("invalid operator config")

// Config configures a Runtime. The zero value of every optional field means its default
// (see DefaultConfig); only Job and Instance are required.
type Config struct {
	// Job the instance belongs to; a token [A-Za-z0-9_-]{1,64}.
	Job string
	// Instance is the instance's stable id; a token [A-Za-z0-9_-]{1,64}.
	Instance string
	// SubjectPrefix is the first token(s) of every subject of Cairn's wire contract the
	// instance uses (barriers, acks, checkpoint events, its info endpoint); empty means
	// "cairn". Every service of the job must use the same prefix.
	SubjectPrefix string
	// InputStream is the stream the input is read from; empty means CAIRN_INPUT.
	InputStream string
	// InputFilters are the subject filters of InputStream the instance reads, through one
	// ordered consumer: the records of every filter arrive in stream order, and positions
	// stay stream sequences. Empty means <prefix>.input.<job>.<instance>.
	InputFilters []string
	// OutputStream is the stream that stores the outputs of a Machine that is a Producer;
	// Run waits for it to exist, and only for such a Machine. Empty means CAIRN_OUTPUT.
	OutputStream string
	// Heartbeat is how often the registration is renewed; 0 means a third of the TTL of
	// the CAIRN_LEASES bucket.
	Heartbeat time.Duration
	// ResetState starts a member of the job empty on purpose, dropping the state its
	// checkpoints hold, and reads its input from the start of what the stream still holds.
	// It is logged at warn level and recorded as a reset_state member event. Without it a
	// member none of whose snapshots can be restored refuses to start (ErrNoUsableSnapshot).
	// It resets at every start it is given to: set it for one start only.
	ResetState bool
	// AcceptInputGap lets a restored instance go on when input after its restored position
	// may have been removed from the input stream, logged at warn level and recorded as an
	// input_gap_accepted member event. Without it the start is refused (ErrInputGap).
	AcceptInputGap bool
	// RestoreFrom restores a chosen checkpoint instead of the newest: a number is a
	// checkpoint id (the manifest <job>.<id> in CAIRN_MANIFESTS), anything else the name of
	// a savepoint (<job>.savepoint.<name>). The input resumes after that checkpoint's
	// positions. There is no fallback: when the checkpoint, this instance's snapshot in it,
	// or the input after it is gone, Run refuses to start with an error wrapping
	// ErrRestoreFrom. Empty restores the newest usable checkpoint.
	RestoreFrom string
	// SharedSnapshotStore uploads snapshots into the store every job shares,
	// CAIRN_SNAPSHOTS, instead of the job's own, CAIRN_SNAPSHOTS_<job>: what cairn dev runs,
	// plain on loopback. NATS permissions cannot keep jobs apart in a shared store; the
	// job's coordinators must make the same choice (their snapshot options'
	// SharedSnapshotStore), since they create the store and take only acks of snapshots in
	// it.
	SharedSnapshotStore bool
	// ReemitOutputs publishes again, on purpose, the outputs of the input records replayed
	// after the restore that the output stream already holds (new code after an upgrade,
	// say), under message ids that end with the incarnation, so that no duplicate window
	// drops them. It is logged at warn level and recorded as an outputs_reemitted member
	// event; the start fails if the event cannot be stored. Without it those outputs are
	// not published again (see Producer). Only for a Producer; it applies at every start
	// it is given to: set it for one start only.
	ReemitOutputs bool
	// OnPoison is what the runtime does with a record it cannot process: the Machine
	// panics applying it, or one of its outputs can never be stored (see PoisonPolicy).
	// Empty means PoisonDeadLetter.
	OnPoison PoisonPolicy
	// Logger receives the runtime's log records, with the attributes job, instance and
	// incarnation; nil means no logging.
	Logger *slog.Logger
}

// PoisonPolicy is what the runtime does with a record whose processing fails for good:
// the Machine panics applying it (Apply or TakeOutputs), or one of its outputs can never
// be stored (it exceeds the server's max_payload or the output stream's maximum message
// size, its subject cannot be published to, or JetStream refuses it with an error that
// is not transient three times in a row). Failures that pass (a NATS outage, a stream
// without a leader, a full store) are retried until the output is stored, never counted.
type PoisonPolicy string

// The poison-record policies.
const (
	// PoisonDeadLetter writes the record to CAIRN_DEADLETTER (subject
	// <prefix>.deadletter.<job>.<instance>) with its position, subject, error and the
	// incarnation, and skips it: its outputs not yet stored are dropped, the position
	// moves past it, and records after it are applied. A restore that replays it finds it
	// there: it is applied again (so the state is the one the instance had), its outputs
	// are not published and it is not written again. The default.
	PoisonDeadLetter PoisonPolicy = "dead-letter"
	// PoisonStop stops processing at the record: the instance stays up and registered,
	// applies nothing more, declines every barrier with the record named in the reason,
	// reports it in its info (Info.Stopped), and Runtime.Health returns
	// an error wrapping ErrProcessingStopped, until it is restarted. A restart meets the
	// record again. A CheckpointListener that panics stops processing too.
	PoisonStop PoisonPolicy = "stop"
)

// ParsePoisonPolicy reads a policy: "dead-letter", "stop", or "" for the default.
func ParsePoisonPolicy(s string) (PoisonPolicy, error) {
	switch p := PoisonPolicy(s); p {
	case "":
		return PoisonDeadLetter, nil
	case PoisonDeadLetter, PoisonStop:
		return p, nil
	}
	return "", fmt.Errorf("poison policy %q: allowed: %s, %s", s, PoisonDeadLetter, PoisonStop)
}

// DefaultConfig returns the config of instance of job with every other field at its
// default. InputFilters stays empty, meaning the instance's default subject under
// whatever SubjectPrefix is set afterwards.
func DefaultConfig(job, instance string) Config {
	return Config{Job: job, Instance: instance, InputStream: cairnjs.InputStream, OutputStream: cairnjs.OutputStream, OnPoison: PoisonDeadLetter}
}

// subjects builds the wire contract's subjects under SubjectPrefix.
func (c Config) subjects() cairnjs.Subjects { return cairnjs.Subjects{Prefix: c.SubjectPrefix} }

// withDefaults fills the optional fields whose defaults need no server.
func (c Config) withDefaults() Config {
	if c.InputStream == "" {
		c.InputStream = cairnjs.InputStream
	}
	if len(c.InputFilters) == 0 {
		c.InputFilters = []string{c.subjects().Input(c.Job, c.Instance)}
	}
	if c.OutputStream == "" {
		c.OutputStream = cairnjs.OutputStream
	}
	if c.OnPoison == "" {
		c.OnPoison = PoisonDeadLetter
	}
	return c
}

// Validate reports the first field that cannot run, naming it and what is allowed.
func (c Config) Validate() error {
	if err := messages.ValidateName("job", c.Job); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := messages.ValidateName("instance", c.Instance); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	for _, s := range []struct{ what, name string }{{"input stream", c.InputStream}, {"output stream", c.OutputStream}} {
		if s.name != "" && strings.ContainsAny(s.name, ". *>\t\r\n") {
			return fmt.Errorf("%w: %s %q: a stream name may not contain '.', '*', '>' or white space", ErrInvalidConfig, s.what, s.name)
		}
	}
	for i, f := range c.InputFilters {
		if err := cairnjs.ValidateSubject(f, true); err != nil {
			return fmt.Errorf("%w: input filter %d %q: %w", ErrInvalidConfig, i+1, f, err)
		}
		if slices.Contains(c.InputFilters[:i], f) {
			return fmt.Errorf("%w: input filter %q is given twice", ErrInvalidConfig, f)
		}
	}
	if c.Heartbeat < 0 {
		return fmt.Errorf("%w: heartbeat %s is negative; allowed: 0 (a third of the lease TTL) or a positive duration", ErrInvalidConfig, c.Heartbeat)
	}
	if _, err := ParsePoisonPolicy(string(c.OnPoison)); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.RestoreFrom != "" && c.ResetState {
		return fmt.Errorf("%w: restore from %q and reset state exclude each other; give one", ErrInvalidConfig, c.RestoreFrom)
	}
	if c.RestoreFrom != "" {
		if _, err := parseRestoreFrom(c.RestoreFrom); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}
