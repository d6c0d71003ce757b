package messages_test

import (
	"fmt"
	"strings"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// A set request is a merge patch: only the fields given change. Errors name the field
// and say what is allowed.
func ExampleParseConfigPatch() {
	patch, err := messages.ParseConfigPatch([]byte(`{"interval":"2s","max_concurrent":2}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, err := patch.Apply(messages.DefaultConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Interval, cfg.MaxConcurrent, cfg.Timeout, cfg.Retain)

	// Each error is printed on two lines, split at "; ": what is wrong, then what is allowed.
	for _, body := range []string{`{"interval":5}`, `{"max_concurrent":17}`} {
		_, err = messages.ParseConfigPatch([]byte(body))
		wrong, allowed, _ := strings.Cut(err.Error(), "; ")
		fmt.Printf("%s;\n  %s\n", wrong, allowed)
	}
	// Output:
	// 2s 2 10m0s 3
	// bad request: interval: a number is not a duration (the unit would be a guess);
	//   give a duration string such as "750ms", "10s" or "5m"
	// bad request: max_concurrent: 17 is out of range;
	//   give a whole number from 1 to 16
}
