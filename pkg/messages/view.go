package messages

import "time"

// ConfigView is the JSON reply to cairn.config.set.<job> and cairn.config.get.<job>: the
// whole config in force and its version (0 for a job still on the defaults).
type ConfigView struct {
	Job               string     `json:"job"`
	Version           uint64     `json:"version"`
	Interval          string     `json:"interval"`
	Timeout           string     `json:"timeout"`
	MinPause          string     `json:"min_pause"`
	MaxConcurrent     int        `json:"max_concurrent"`
	TolerableFailures int        `json:"tolerable_failures"`
	Retain            int        `json:"retain"`
	UpdatedAt         *time.Time `json:"updated_at,omitempty"`
}

// NewConfigView renders a config and its version for a reply; updated is omitted when zero.
func NewConfigView(job string, version uint64, c CheckpointConfig, updated time.Time) ConfigView {
	v := ConfigView{
		Job:               job,
		Version:           version,
		Interval:          formatDuration(c.Interval),
		Timeout:           formatDuration(c.Timeout),
		MinPause:          formatDuration(c.MinPause),
		MaxConcurrent:     c.MaxConcurrent,
		TolerableFailures: c.TolerableFailures,
		Retain:            c.Retain,
	}
	if !updated.IsZero() {
		u := updated.UTC()
		v.UpdatedAt = &u
	}
	return v
}

// ConfigHistory is the JSON reply to cairn.config.history.<job>: the job's config
// versions, oldest first (at most the newest MaxHistory).
type ConfigHistory struct {
	Job      string       `json:"job"`
	Versions []ConfigView `json:"versions"`
	// Truncated is true when the list does not start at version 1: older versions exist
	// that the reply leaves out (over MaxHistory), or garbage published on the job's
	// subject pushed them out of the stream.
	Truncated bool `json:"truncated,omitempty"`
}

// MaxHistory is the most versions a ConfigHistory reply carries.
const MaxHistory = 1000

// ErrorBody is the JSON body of every error reply.
type ErrorBody struct {
	Error string `json:"error"`
}
