package operator

import (
	"errors"
	"fmt"
	"strings"
	"time"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrInvalidConfig is returned (wrapped) by Config.Validate and New for a config that
// cannot run.
var ErrInvalidConfig = errors.New("invalid operator config")

// Config configures a Runtime. Zero values of the optional fields mean their defaults.
type Config struct {
	// Job the instance belongs to; a token [A-Za-z0-9_-]{1,64}.
	Job string
	// Instance is the instance's stable id; a token [A-Za-z0-9_-]{1,64}.
	Instance string
	// Subjects gives the subject prefix of the wire contract.
	Subjects cjs.Subjects
	// InputStream is the stream the input is read from; empty means cjs.InputStream.
	InputStream string
	// InputSubject is the subject (filter) the input is read from; empty means
	// Subjects.Input(Job, Instance).
	InputSubject string
	// Heartbeat is how often the registration is renewed; 0 means a third of the TTL of
	// the CAIRN_LEASES bucket.
	Heartbeat time.Duration
	// Output is the subject the reference aggregator (Service) emits each key's new
	// totals on; empty means it emits nothing. A Runtime with another Machine ignores it.
	Output string
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
}

// DefaultConfig returns the config of instance of job with every other field at its
// default.
func DefaultConfig(job, instance string) Config {
	return Config{Job: job, Instance: instance, InputStream: cjs.InputStream}
}

// withDefaults fills the optional fields whose defaults need no server.
func (c Config) withDefaults() Config {
	if c.InputStream == "" {
		c.InputStream = cjs.InputStream
	}
	if c.InputSubject == "" {
		c.InputSubject = c.Subjects.Input(c.Job, c.Instance)
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
	if c.InputStream != "" && strings.ContainsAny(c.InputStream, ". *>\t\r\n") {
		return fmt.Errorf("%w: input stream %q: a stream name may not contain '.', '*', '>' or white space", ErrInvalidConfig, c.InputStream)
	}
	if c.InputSubject != "" {
		if err := validateSubject(c.InputSubject); err != nil {
			return fmt.Errorf("%w: input subject %q: %w", ErrInvalidConfig, c.InputSubject, err)
		}
	}
	if c.Output != "" {
		if err := validateSubject(c.Output); err != nil || strings.ContainsAny(c.Output, "*>") {
			return fmt.Errorf("%w: output subject %q: a subject of non-empty tokens without wildcards is required", ErrInvalidConfig, c.Output)
		}
	}
	if c.Heartbeat < 0 {
		return fmt.Errorf("%w: heartbeat %s is negative; allowed: 0 (a third of the lease TTL) or a positive duration", ErrInvalidConfig, c.Heartbeat)
	}
	return nil
}

// validateSubject checks that s is a subject or subject filter: non-empty tokens separated
// by dots, no white space, '>' only as the last token.
func validateSubject(s string) error {
	if strings.ContainsAny(s, " \t\r\n") {
		return errors.New("white space is not allowed")
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return fmt.Errorf("token %d is empty", i+1)
		case t == ">" && i != len(tokens)-1:
			return errors.New("'>' is only allowed as the last token")
		case len(t) > 1 && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("token %q mixes a wildcard with other characters", t)
		}
	}
	return nil
}
