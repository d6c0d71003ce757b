// Package proctest runs Cairn as separate OS processes for tests: it builds the binaries
// once, starts, signals and restarts processes whose output goes to a log file per
// process, and polls conditions with a deadline. The chaos harness (tests/chaos) and the
// process-level exactly-once tests (tests/process) share it.
package proctest
