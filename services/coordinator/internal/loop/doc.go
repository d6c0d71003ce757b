// Package loop is one job's checkpoint coordination as a state machine: a single goroutine
// (Job.Run, a select loop with one timer) that schedules barriers under the rule
//
//	next = max(lastTrigger + interval, lastComplete + min_pause, now)
//
// while fewer than max_concurrent checkpoints are pending, collects acks and declines,
// aborts checkpoints that time out, are declined or lose an instance, writes the manifests
// of completed ones, removes members, takes manual checkpoints and savepoints, and paces
// retention. It acts only under a lease the caller reports (Job.OfferLease) and stops at
// once (fences) when the lease ends.
//
// It knows nothing of NATS: everything it stores or publishes goes through Backend, and
// everything it receives comes through the Job's non-blocking mailbox (OfferConfig,
// OfferRegistration, OfferAck, OfferLease) or its request methods (Status, RemoveMember,
// Trigger, DeleteSavepoint). Tests drive it with a fake Backend on synctest's clock.
package loop
