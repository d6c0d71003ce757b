// Package tests holds Cairn's cross-service tests: tests/integration runs configsvc, the
// coordinator and operators together on an embedded nats-server; tests/bench measures
// latencies against the raw NATS floor; tests/e2e drives the compose deployment with the
// stock nats CLI.
package tests
