// Package messages is Cairn's wire contract: the msgpack messages that services exchange
// over NATS (config events, barriers, acks, checkpoint events, manifests, registrations,
// leases) and the JSON request and reply bodies of the human-facing endpoints.
//
// Every msgpack message carries a major schema version (SchemaVersion) and is decoded
// strictly, with the tolerances a rolling upgrade needs: fields this build does not know
// and a newer minor version (MinorKey) are accepted, and so are enum values from a newer
// build where acting on them is safe (an abort reason, an outcome, a member event kind),
// but not where it is not (an ack kind). Wrong types, repeated fields, trailing bytes, a
// missing schema or another major one and out-of-range values are rejected with an error
// that says what was wrong and what is allowed. Enums are append-only. The human-facing
// JSON requests (config patches, member removal) stay strict: an unknown field there is a
// typo. docs/compatibility.md has the rules.
package messages
