// Package process holds Cairn's process-level exactly-once tests: configsvc, a coordinator
// and `cairn operator` instances run as separate OS processes (the cairn binary is built
// once per package) against a nats-server embedded in the test process, and the tests
// stop them with SIGTERM or SIGKILL, start a second process with an instance id in use,
// and purge or trim their input, then check that every instance's per-key counts and sums,
// and its outputs, are exact.
//
// Every exactly-once test reads trimmed input (purged by the test, or trimmed by the
// coordinator and checked to be), so an instance that replays its input from sequence 1
// instead of restoring its checkpoint cannot end exact. docs/failure-model.md describes
// the guarantees; each test names the acceptance item (of issue 7, or 14 for outputs after
// long downtimes and old savepoints) it checks.
package process
