// Package coordinator is Cairn's checkpoint coordinator. For every job it follows the
// versioned config events and the registered operator instances, holds the job's lease,
// emits barriers on the schedule
//
//	next = max(lastTrigger + interval, lastComplete + min_pause, now)
//
// while fewer than max_concurrent checkpoints are pending, collects acks and declines,
// aborts checkpoints that time out, are declined or lose an instance, writes manifests of
// completed ones, publishes checkpoint events and deletes snapshots no retained manifest
// references. A new config version re-evaluates the schedule at once.
//
// Each job is owned by one goroutine (a select loop with one timer); the NATS consumers
// and the status endpoint only send it messages.
package coordinator
