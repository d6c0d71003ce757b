package state_test

import (
	"bytes"
	"fmt"

	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// A Machine's Apply reads and writes the store through typed views; the runtime
// captures the changes at every checkpoint and writes them as a delta segment, which
// Load applies to the base.
func ExampleStore() {
	st := state.New()
	counts := state.NewMap(st, "count/", state.Int64)
	for _, word := range []string{"to", "be", "or", "not", "to", "be"} {
		n, _, _ := counts.Get(word)
		_ = counts.Put(word, n+1)
	}
	var base bytes.Buffer
	_, _ = state.WriteSegment(&base, state.Base, st.Capture())

	counts.Delete("or")
	_ = counts.Put("be", 10)
	var delta bytes.Buffer
	n, _ := state.WriteSegment(&delta, state.Delta, st.Capture())
	fmt.Println("delta records:", n)

	restored := state.New()
	if err := restored.Load(&base, &delta); err != nil {
		panic(err)
	}
	_ = state.NewMap(restored, "count/", state.Int64).Range(func(word string, n int64) bool {
		fmt.Println(word, n)
		return true
	})
	// Output:
	// delta records: 2
	// be 10
	// not 1
	// to 2
}
