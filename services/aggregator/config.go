package aggregator

import (
	"fmt"
	"slices"
	"strings"

	op "github.com/cairn-stream/cairn/pkg/operator"
)

// Config configures the reference operator: the runtime's config and the aggregator's
// own option.
type Config struct {
	op.Config
	// Output is the subject the aggregator emits each key's new totals on (captured by
	// the runtime's OutputStream); empty means it emits nothing, and the runtime then does
	// not look up the output stream.
	Output string
}

// DefaultConfig returns the config of instance of job with every other field at its
// default.
func DefaultConfig(job, instance string) Config {
	return Config{Config: op.DefaultConfig(job, instance)}
}

// Validate reports the first field that cannot run.
func (c Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.Output != "" && (strings.ContainsAny(c.Output, "*> \t\r\n") || slices.Contains(strings.Split(c.Output, "."), "")) {
		return fmt.Errorf("%w: output subject %q: a subject of non-empty tokens without wildcards is required", op.ErrInvalidConfig, c.Output)
	}
	if c.ReemitOutputs && c.Output == "" {
		return fmt.Errorf("%w: reemit outputs needs an output subject (--output): without one the operator emits nothing", op.ErrInvalidConfig)
	}
	return nil
}
