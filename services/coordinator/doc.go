// Package coordinator is Cairn's checkpoint coordinator. For every job it follows the
// versioned config events (and heads, which keep the newest version when garbage pushed
// its event out) and the registered operator instances, holds the job's lease,
// emits barriers on the schedule
//
//	next = max(lastTrigger + interval, lastComplete + min_pause, now)
//
// while fewer than max_concurrent checkpoints are pending, collects acks and declines,
// aborts checkpoints that time out, are declined or lose an instance, writes manifests of
// completed ones, publishes checkpoint events and deletes snapshots no retained manifest
// references. A new config version re-evaluates the schedule at once.
//
// On request (cairn.checkpoint.trigger.<job>) the lease holder sends a barrier as soon as
// max_concurrent allows and answers when that checkpoint has ended; a savepoint is such a
// checkpoint whose manifest is also kept under <job>.savepoint.<name>, outside retention
// and trimming, until cairn.checkpoint.delete.<job> removes it. Standbys forward these
// requests, member removals and status requests to the holder.
//
// The package is the service: it follows configs, registrations and acks, keeps the
// registry of jobs (running or parked), places jobs on replicas and serves the request
// endpoints, forwarding those only the lease holder answers. Each job is owned by one
// goroutine, the state machine of package internal/loop, which reaches NATS only through
// the JetStream storage of package internal/store; everything else only sends it messages.
package coordinator
