// Package embedded runs a nats-server with JetStream inside the calling process: the
// server behind `cairn dev`, and the one tests of Cairn and of services built on it
// connect to. It is kept apart from pkg/cairnjs so that importing the client-side
// packages never compiles the server in.
package embedded
