package aggregator_test

import (
	"errors"
	"strings"
	"testing"

	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/services/aggregator"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*aggregator.Config)
		want string // "" for valid
	}{
		{name: "defaults", edit: func(*aggregator.Config) {}},
		{name: "output", edit: func(c *aggregator.Config) { c.Output = "cairn.output.orders.counter-0" }},
		{name: "reemit with output", edit: func(c *aggregator.Config) {
			c.Output, c.ReemitOutputs = "cairn.output.orders.counter-0", true
		}},
		{name: "reemit without output", edit: func(c *aggregator.Config) { c.ReemitOutputs = true }, want: "reemit outputs needs an output subject"},
		{name: "output with a wildcard", edit: func(c *aggregator.Config) { c.Output = "cairn.output.>" }, want: "without wildcards"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := aggregator.DefaultConfig("orders", "counter-0")
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.want != "" && (!errors.Is(err, op.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want ErrInvalidConfig saying %q", err, tt.want)
			}
		})
	}
}
