// Package cairntest plays Cairn's coordinator in tests of operators: it sends barriers,
// collects acks, writes manifests and publishes checkpoint events, each when the test
// says, so that a test can stop an operator at an exact point of a checkpoint (after its
// snapshot, before the completion).
package cairntest
