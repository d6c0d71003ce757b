package messages

import (
	"errors"
	"time"
)

// Registration is an operator instance's heartbeat record in KV CAIRN_LEASES under
// instance.<job>.<instance>; it lives as long as the bucket's TTL after the last beat.
type Registration struct {
	Schema   int    `msgpack:"schema"`
	Job      string `msgpack:"job"`
	Instance string `msgpack:"instance"`
	// Incarnation is new at every process start: a changed incarnation means the instance
	// restarted and never saw earlier barriers.
	Incarnation string    `msgpack:"incarnation"`
	StartedAt   time.Time `msgpack:"started_at"`
}

// SchemaVersion implements Message.
func (r *Registration) SchemaVersion() int { return r.Schema }

// Validate implements Message.
func (r *Registration) Validate() error {
	if err := ValidateName("job", r.Job); err != nil {
		return err
	}
	if err := ValidateName("instance", r.Instance); err != nil {
		return err
	}
	if r.Incarnation == "" {
		return errors.New("registration: incarnation is empty")
	}
	return nil
}

// Counter is a job's checkpoint id counter in KV CAIRN_MANIFESTS under <job>.counter,
// advanced with compare-and-set before each barrier so that no id is issued twice.
type Counter struct {
	Schema int    `msgpack:"schema"`
	Job    string `msgpack:"job"`
	// Last is the last checkpoint id issued.
	Last uint64 `msgpack:"last"`
}

// SchemaVersion implements Message.
func (c *Counter) SchemaVersion() int { return c.Schema }

// Validate implements Message.
func (c *Counter) Validate() error { return ValidateName("job", c.Job) }

// Lease is a coordinator's claim on a job in KV CAIRN_LEASES under leader.<job>; only the
// holder triggers checkpoints, and it must renew before the bucket's TTL runs out.
type Lease struct {
	Schema int    `msgpack:"schema"`
	Job    string `msgpack:"job"`
	// Holder is the coordinator's id, new at every process start.
	Holder     string    `msgpack:"holder"`
	AcquiredAt time.Time `msgpack:"acquired_at"`
}

// SchemaVersion implements Message.
func (l *Lease) SchemaVersion() int { return l.Schema }

// Validate implements Message.
func (l *Lease) Validate() error {
	if err := ValidateName("job", l.Job); err != nil {
		return err
	}
	if l.Holder == "" {
		return errors.New("lease: holder is empty")
	}
	return nil
}

// InstanceRecord is the lasting record of an operator instance in KV CAIRN_INSTANCES under
// <job>.<instance>. Unlike the registration it has no TTL and Cairn never deletes it: a clean
// stop marks it, a new process claims it. It is what tells an incarnation that lost its
// registration whether a newer one has started since (then it is fenced), and what tells a
// member whose manifests are gone that it had state (then it refuses to start as new).
type InstanceRecord struct {
	Schema   int    `msgpack:"schema"`
	Job      string `msgpack:"job"`
	Instance string `msgpack:"instance"`
	// Incarnation is the newest incarnation that claimed the instance, at its start.
	Incarnation string `msgpack:"incarnation"`
	// Claims counts the incarnations that have claimed the instance.
	Claims uint64 `msgpack:"claims"`
	// ClaimedAt is when Incarnation claimed the instance.
	ClaimedAt time.Time `msgpack:"claimed_at"`
	// StoppedAt is when Incarnation stopped cleanly; zero while it runs, and after a crash.
	StoppedAt time.Time `msgpack:"stopped_at,omitempty"`
	// Member is the id of a completed checkpoint that holds the instance, written by the
	// coordinator when the instance joins the job's members (and by an incarnation that
	// restored a checkpoint); 0 while the instance is not a member: new, or removed on
	// purpose (the coordinator clears it then).
	Member uint64 `msgpack:"member,omitempty"`
}

// SchemaVersion implements Message.
func (r *InstanceRecord) SchemaVersion() int { return r.Schema }

// Validate implements Message.
func (r *InstanceRecord) Validate() error {
	if err := ValidateName("job", r.Job); err != nil {
		return err
	}
	if err := ValidateName("instance", r.Instance); err != nil {
		return err
	}
	if r.Incarnation == "" {
		return errors.New("instance record: incarnation is empty")
	}
	return nil
}
