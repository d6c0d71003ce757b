package messages

import (
	"errors"
	"time"
)

// Replica is a running coordinator's announcement in KV CAIRN_LEASES under
// coordinator.<id>, renewed like a lease: the live replicas are the keys present. Jobs are
// spread over them by rendezvous hashing; a replica competes at once only for the jobs
// whose preferred owner it is.
type Replica struct {
	Schema int    `msgpack:"schema"`
	ID     string `msgpack:"id"`
	// Jobs are the jobs the replica coordinates; empty means every job.
	Jobs      []string  `msgpack:"jobs,omitempty"`
	StartedAt time.Time `msgpack:"started_at"`
}

// SchemaVersion implements Message.
func (r *Replica) SchemaVersion() int { return r.Schema }

// Validate implements Message.
func (r *Replica) Validate() error {
	if r.ID == "" {
		return errors.New("replica: id is empty")
	}
	for _, j := range r.Jobs {
		if err := ValidateName("job", j); err != nil {
			return err
		}
	}
	return nil
}
