// Package state is the keyed state store of Cairn's operator SDK: a map of byte keys to
// byte values that a Machine built with operator.Keyed reads and writes from its
// processing goroutine, and that the runtime checkpoints incrementally.
//
// A Store remembers which keys changed since its last Capture. Capture hands those
// changes over in O(changed keys) without copying a value: a stored value is never
// modified in place (Put stores a copy, a later Put replaces it), so a captured value
// stays what it was. The changes are written as a delta segment off the processing
// goroutine; base segments hold a whole state. Both use the segment format of
// docs/state-segments.md, which is independent of the in-memory structure: Merge folds a
// base and its deltas into a new base, and Load rebuilds a Store from a base and its
// deltas.
//
// Typed views (Map with a Codec: JSON, Uint64, Int64, String, Bytes) store values of a Go
// type under a key prefix.
//
// A Store is used by one goroutine at a time, like the Machine that owns it.
package state
