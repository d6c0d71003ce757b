// Package integration runs configsvc, the coordinator and reference operators together on
// a real embedded nats-server and checks the behaviour users rely on: live re-timing of
// barriers, completion with manifests and snapshots, aborts, and exactly-once restore.
package integration
