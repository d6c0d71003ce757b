package messages

import (
	"errors"
	"strings"
	"time"
)

// Bounds of the config fields, as documented in README.md (Change the interval while it runs).
const (
	MinInterval          = 100 * time.Millisecond
	MaxInterval          = 24 * time.Hour
	MinTimeout           = time.Second
	MaxTimeout           = 24 * time.Hour
	MaxMinPause          = 24 * time.Hour
	MinMaxConcurrent     = 1
	MaxMaxConcurrent     = 16
	MinTolerableFailures = -1
	MaxTolerableFailures = 1000
	MinRetain            = 1
	MaxRetain            = 100
)

// ErrInvalidCheckpointConfig is returned (wrapped) for a checkpoint config value out of its
// allowed range.
var ErrInvalidCheckpointConfig = errors.New("invalid config")

// CheckpointConfig is a job's checkpoint settings (distinct from the services' and the
// operator SDK's Config). The zero value is not valid; start from DefaultConfig.
type CheckpointConfig struct {
	// Interval is the time between the starts of two checkpoints.
	Interval time.Duration `msgpack:"interval"`
	// Timeout aborts a checkpoint that has not completed this long after its trigger.
	Timeout time.Duration `msgpack:"timeout"`
	// MinPause is the least time between a checkpoint's completion and the next trigger.
	MinPause time.Duration `msgpack:"min_pause"`
	// MaxConcurrent is the most checkpoints pending at once.
	MaxConcurrent int `msgpack:"max_concurrent"`
	// TolerableFailures is how many consecutive counted failures are tolerated before the
	// job is marked failed; -1 never marks it failed.
	TolerableFailures int `msgpack:"tolerable_failures"`
	// Retain is how many completed checkpoints are kept.
	Retain int `msgpack:"retain"`
}

// DefaultConfig returns the config a job runs on before its first version.
func DefaultConfig() CheckpointConfig {
	return CheckpointConfig{
		Interval:          10 * time.Second,
		Timeout:           10 * time.Minute,
		MinPause:          0,
		MaxConcurrent:     1,
		TolerableFailures: -1,
		Retain:            3,
	}
}

// Validate reports the first field out of its allowed range, naming the field as it is
// spelled in JSON and the range allowed.
func (c CheckpointConfig) Validate() error {
	for _, f := range configFields {
		if err := f.validate(c); err != nil {
			return err
		}
	}
	return nil
}

// formatDuration formats d like time.Duration.String without trailing zero units
// ("24h", "10m", "1h30m" rather than "24h0m0s", "10m0s", "1h30m0s"); the result parses
// back to d with time.ParseDuration.
func formatDuration(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// ConfigEvent is published by configsvc on cairn.config.events.<job> for every accepted
// change; the stream's history of them is the job's config audit log.
type ConfigEvent struct {
	Schema int `msgpack:"schema"`
	// Job is the job the config belongs to.
	Job string `msgpack:"job"`
	// Version is 1, 2, 3 … per job, never reused.
	Version uint64 `msgpack:"version"`
	// Config is the whole config in force from this version on (not the patch).
	Config CheckpointConfig `msgpack:"config"`
	// Time is when configsvc accepted the change.
	Time time.Time `msgpack:"time"`
}

// SchemaVersion implements Message.
func (e *ConfigEvent) SchemaVersion() int { return e.Schema }

// Validate implements Message.
func (e *ConfigEvent) Validate() error {
	if err := ValidateName("job", e.Job); err != nil {
		return err
	}
	if e.Version == 0 {
		return errors.New("config event: version 0 is reserved for the defaults; allowed: 1 and up")
	}
	return e.Config.Validate()
}
