// Package chaos is Cairn's chaos harness.
//
// TestChaos builds the cairn binary and a nats-server, then runs configsvc, two
// coordinators and three reference operators as separate OS processes against a
// nats-server process with a file store. The test process feeds every operator a known
// event stream and re-times the checkpoints several times, while a seeded schedule
// SIGKILLs operators (some just after a barrier, so mid-snapshot), stops some with SIGTERM,
// keeps one away far longer than retain × interval, starts a second process with an
// instance id in use, and SIGKILLs the coordinator that holds the job's lease and, once,
// the nats-server, restarting each. At the end it checks that the input was trimmed, that
// every per-key count and sum and every output is exact, that no checkpoint id was issued
// twice or out of order, and that config versions were applied in order; its report gives
// the seed, the counts and the fail-over gaps.
//
// The test is skipped unless CAIRN_CHAOS=1, so `go test ./...` stays fast;
// CAIRN_CHAOS_SEED=<n> replays a run's schedule. docs/chaos.md explains how to run it and
// what it checks.
package chaos
