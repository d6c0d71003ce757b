package configsvc

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// ErrInvalidConfig is returned (wrapped) by Config.Validate and New for an unusable Config.
var ErrInvalidConfig = errors.New("invalid configsvc config")

// Config configures the service.
type Config struct {
	// Subjects gives the subject prefix of the requests and of the config events; it must
	// be the prefix the CAIRN_CONFIG stream was created with. An empty prefix means
	// cairnjs.DefaultPrefix.
	Subjects cairnjs.Subjects
}

// DefaultConfig returns the config with the default subject prefix.
func DefaultConfig() Config {
	return Config{Subjects: cairnjs.Subjects{Prefix: cairnjs.DefaultPrefix}}
}

// Validate checks that the prefix is one or more subject tokens without wildcards.
func (c Config) Validate() error {
	if c.Subjects.Prefix == "" {
		return nil
	}
	for i, tok := range strings.Split(c.Subjects.Prefix, ".") {
		if tok == "" {
			return fmt.Errorf("%w: subject prefix %q has an empty token at position %d; give tokens separated by single dots", ErrInvalidConfig, c.Subjects.Prefix, i)
		}
		if strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("%w: subject prefix %q has token %q with a wildcard or white space; allowed: plain subject tokens", ErrInvalidConfig, c.Subjects.Prefix, tok)
		}
	}
	return nil
}
