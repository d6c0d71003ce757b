// Package cairnjs is Cairn's thin layer over nats.go and its jetstream package: the
// subject names of the wire contract, connecting with reconnect-forever and credentials
// from the environment, idempotent creation of the streams, KV buckets and object store
// Cairn uses. The embedded nats-server of `cairn dev` and the tests is in pkg/embedded,
// so that importing this package never compiles the server in.
//
// It does not log; connection events reach the caller through hooks.
package cairnjs
