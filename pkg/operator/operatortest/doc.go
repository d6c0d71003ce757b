// Package operatortest tests an operator built on pkg/operator without Cairn's services:
// StartServer runs an embedded nats-server with Cairn's streams and buckets, and a
// Coordinator plays the job's coordinator one step at a time (send a barrier, read the
// ack, complete or abort the checkpoint), so that a test can stop an instance at an exact
// point of a checkpoint and check what it restores.
//
// It is a package for tests: it compiles in nats-server, which pkg/operator itself never
// imports.
package operatortest
