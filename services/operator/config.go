package operator

import op "github.com/cairn-stream/cairn/pkg/operator"

// Config configures the reference operator: the Runtime's config.
type Config = op.Config

// DefaultConfig returns the config of instance of job with every other field at its
// default.
func DefaultConfig(job, instance string) Config { return op.DefaultConfig(job, instance) }
