// Package messages is Cairn's wire contract: the msgpack messages that services exchange
// over NATS (config events, barriers, acks, checkpoint events, manifests, registrations,
// leases) and the JSON request and reply bodies of the human-facing endpoints.
//
// Every msgpack message carries a schema version and is decoded strictly: unknown fields,
// wrong types, a missing or newer schema and out-of-range values are rejected with an error
// that says what was wrong and what is allowed. Enums are append-only.
package messages
