// Package configsvc is the cairn-config micro service: it answers set and get requests
// for a job's checkpoint config and keeps every accepted change as a versioned event in
// the CAIRN_CONFIG stream.
//
// A set request (cairn.config.set.<job>) is a merge patch, JSON by default or msgpack with
// Content-Type application/msgpack. The service reads the job's last event, applies the
// patch, and publishes the next version with Nats-Expected-Last-Subject-Sequence, so any
// number of replicas can run side by side and never issue the same version twice; a
// replica that loses that race re-reads and retries, or answers 409 when the request
// carried an expected_version that is no longer current. A get request
// (cairn.config.get.<job>) answers the config in force, version 0 and the defaults for a
// job that has none.
//
// Replies are JSON. Errors carry micro's Nats-Service-Error-Code header — 400 bad
// request or job name, 409 version conflict, 503 storage unavailable, 500 a bug — and a
// JSON body {"error":"..."} naming the field and what is allowed.
//
// Decisions beyond DESIGN.md: a field given twice is refused (400) rather than the last
// one winning; a msgpack request must use str, not bin, for durations; Content-Type is
// matched as a media type (case-insensitive, parameters ignored) and anything other than
// application/msgpack is read as JSON; a request published without a reply subject is
// still applied.
package configsvc
