// Package configsvc is the cairn-config micro service: it answers set and get requests
// for a job's checkpoint config and keeps every accepted change as a versioned event in
// the CAIRN_CONFIG stream.
//
// A set request (cairn.config.set.<job>) is a merge patch, JSON by default or msgpack with
// Content-Type application/msgpack. The service reads the job's config in force (the newer
// of its head and its last event, internal/configlog), applies the patch, and publishes
// the next version with Nats-Expected-Last-Subject-Sequence, so any number of replicas can
// run side by side and never issue the same version twice; a replica that loses that race
// re-reads and retries, or answers 409 when the request carried an expected_version that
// is no longer current. It then writes the job's head (cairn.config.events.<job>.head), a
// copy of the event, so that nothing else published on the events subject can hide the
// version or push it out. A get request (cairn.config.get.<job>) answers the config in
// force, version 0 and the defaults for a job that has none, and writes the head of a job
// whose head is behind. A history request (cairn.config.history.<job>) lists the valid
// events the stream holds, and the head when garbage pushed its event out.
//
// Replies are JSON. Errors carry micro's Nats-Service-Error-Code header — 400 bad
// request or job name, 409 version conflict, 503 storage unavailable, 500 a bug — and a
// JSON body {"error":"..."} naming the field and what is allowed.
//
// Decisions beyond README.md's config table: a field given twice is refused (400) rather than the last
// one winning; a msgpack request must use str, not bin, for durations; Content-Type is
// matched as a media type (case-insensitive, parameters ignored) and anything other than
// application/msgpack is read as JSON; a request published without a reply subject is
// still applied.
package configsvc
