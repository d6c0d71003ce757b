// Package natstest starts a real embedded nats-server with JetStream for tests and
// benchmarks, with Cairn's resources created, and polls conditions with a deadline.
package natstest
