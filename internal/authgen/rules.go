package authgen

import (
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// role is the kind of process a user is for.
type role string

// The roles, in the order users and tables list them.
const (
	roleAdmin       role = "admin"
	roleConfigsvc   role = "configsvc"
	roleCoordinator role = "coordinator"
	roleOperator    role = "operator"
	roleLoadgen     role = "loadgen"
)

var roles = []role{roleAdmin, roleConfigsvc, roleCoordinator, roleOperator, roleLoadgen}

// kind says what a rule grants.
type kind int

// The kinds of rule.
const (
	publish kind = iota
	denyPublish
	subscribe
)

// rule grants (or, denyPublish, refuses) subject to the users of one role. subject is a
// template; each placeholder expands to one or more values for the user:
//
//	{p}         the subject prefix (cairn)
//	{inbox}     the user's own reply subject prefix (_INBOX.<role>.<name…>)
//	{job}       each job the user serves (an operator: its own)
//	{instance}  the operator's instance (a rule with it applies to operators only)
//	{shared}    each stream every job shares (cairnjs.Options.StreamConfigs and the KV buckets)
//	{input}     each served job's input stream, {output} its output stream
//	{in}        each input subject of the instance (a load generator: of every instance);
//	            ".*.{in}" ending a consumer creation of an instance with several input
//	            subjects becomes ".*": such a consumer's API subject names no subject
//	{out}       each output subject of the instance
//	{store}     the stream of each served job's snapshot store (OBJ_CAIRN_SNAPSHOTS_<job>)
//	{legacy}    the stream of the store every job shared before (OBJ_CAIRN_SNAPSHOTS)
//
// A rule with legacy set applies only when the spec asks for that migration.
type rule struct {
	role    role
	kind    kind
	subject string
	why     string
	legacy  legacy
}

// legacy names the migration a rule belongs to.
type legacy int

const (
	always legacy = iota
	legacySnapshots
	legacyAcks
)

// Subjects of the JetStream API, abbreviated in the rules.
const (
	api      = "$JS.API."
	manifest = "KV_" + cairnjs.ManifestBucket
	leases   = "KV_" + cairnjs.LeaseBucket
	records  = "KV_" + cairnjs.InstanceBucket
)

// rules is every permission of every Cairn user. Add a subject or stream here, and only
// here: the server config, the credentials and docs/security.md all come from it.
var rules = denyDestructive([]rule{
	// admin: a person with the nats CLI.
	{roleAdmin, publish, ">", "everything the nats CLI does (requests, stream and KV administration)", always},
	{roleAdmin, denyPublish, "{p}.config.events.>", "config versions come from configsvc only, so CAIRN_CONFIG stays a true audit log", always},
	{roleAdmin, subscribe, ">", "everything, for watching and debugging", always},

	// configsvc.
	{roleConfigsvc, publish, "{p}.config.events.*", "the only writer of config events", always},
	{roleConfigsvc, publish, "{p}.config.events.*.head", "the only writer of each job's config head", always},
	{roleConfigsvc, publish, api + "STREAM.MSG.GET." + cairnjs.ConfigStream, "the last event and head of a job, before writing the next", always},
	{roleConfigsvc, publish, api + "CONSUMER.CREATE." + cairnjs.ConfigStream + ".>", "a job's history: one pass of an ephemeral consumer", always},
	{roleConfigsvc, publish, api + "CONSUMER.MSG.NEXT." + cairnjs.ConfigStream + ".>", "reading that consumer", always},
	{roleConfigsvc, publish, api + "INFO", "the account's limits, read before creating a KV bucket", always},
	{roleConfigsvc, publish, api + "STREAM.INFO.{shared}", "look up every shared stream and bucket", always},
	{roleConfigsvc, publish, api + "STREAM.CREATE.{shared}", "create them when missing", always},
	{roleConfigsvc, denyPublish, api + "STREAM.PURGE.>", "configsvc removes nothing", always},
	{roleConfigsvc, subscribe, "{inbox}.>", "replies to its own requests", always},
	{roleConfigsvc, subscribe, "$SRV.>", "micro discovery (nats micro ls/info/stats)", always},
	{roleConfigsvc, subscribe, "{p}.config.set.>", "set requests", always},
	{roleConfigsvc, subscribe, "{p}.config.get.>", "get requests", always},
	{roleConfigsvc, subscribe, "{p}.config.history.>", "history requests", always},

	// coordinator: every rule with {job} is granted for each job it coordinates.
	{roleCoordinator, publish, "{p}.barrier.{job}", "barriers: only coordinators send them", always},
	{roleCoordinator, publish, "{p}.checkpoints.{job}.completed", "completed events", always},
	{roleCoordinator, publish, "{p}.checkpoints.{job}.aborted", "aborted events", always},
	{roleCoordinator, publish, "{p}.checkpoints.{job}.members", "member removals' audit events", always},
	{roleCoordinator, publish, "{p}.checkpoints.{job}.alarms", "alarms raised and cleared (an abort reason repeated)", always},
	{roleCoordinator, publish, "{p}.coord.*.status.{job}", "a standby forwards status requests to the lease holder", always},
	{roleCoordinator, publish, "{p}.coord.*.members.remove.{job}", "a standby forwards member removals to the lease holder", always},
	{roleCoordinator, publish, "{p}.coord.*.checkpoint.trigger.{job}", "a standby forwards manual checkpoints and savepoints to the lease holder", always},
	{roleCoordinator, publish, "{p}.coord.*.checkpoint.delete.{job}", "a standby forwards savepoint deletions to the lease holder", always},
	{roleCoordinator, publish, "$KV." + cairnjs.ManifestBucket + ".{job}.>", "manifests, savepoints and the id counter of its jobs", always},
	{roleCoordinator, publish, "$KV." + cairnjs.LeaseBucket + ".leader.{job}", "the job's lease, not the instances' registrations", always},
	{roleCoordinator, publish, "$KV." + cairnjs.LeaseBucket + ".coordinator.*", "its announcement (ids are chosen at start), to spread jobs over replicas", always},
	{roleCoordinator, publish, "$KV." + cairnjs.InstanceBucket + ".{job}.*", "membership in the instance records of its jobs", always},
	{roleCoordinator, publish, api + "STREAM.CREATE.{store}", "create the job's snapshot store before its first barrier", always},
	{roleCoordinator, publish, api + "STREAM.INFO.{store}", "look up the job's snapshot store", always},
	{roleCoordinator, publish, api + "STREAM.PURGE.{store}", "retention: remove an object's chunks and meta, leaving no marker", always},
	{roleCoordinator, publish, api + "DIRECT.GET.{store}", "retention: the infos of many objects in one batched direct get", always},
	{roleCoordinator, publish, api + "DIRECT.GET.{store}.>", "an object's info", always},
	{roleCoordinator, publish, api + "CONSUMER.CREATE.{store}.>", "retention's full scan lists the store", always},
	{roleCoordinator, publish, api + "CONSUMER.DELETE.{store}.>", "retention ends its listing", always},
	{roleCoordinator, publish, api + "STREAM.INFO.{input}", "trimming: look up each job's input stream", always},
	{roleCoordinator, publish, api + "STREAM.PURGE.{input}", "trimming: each member's input below the oldest retained checkpoint (the request names the subject: not scoped to a job)", always},
	{roleCoordinator, publish, api + "STREAM.MSG.GET." + cairnjs.CheckpointStream, "the last checkpoint events (ids a previous holder used)", always},
	{roleCoordinator, publish, api + "STREAM.MSG.GET." + cairnjs.ConfigStream, "a job's config in force past an invalid event", always},
	{roleCoordinator, publish, api + "STREAM.MSG.GET." + records, "instance records, from the bucket's leader", always},
	{roleCoordinator, publish, api + "STREAM.MSG.GET." + manifest, "the id counter, <job>.latest, manifests and savepoints, from the bucket's leader (not scoped to its jobs)", always},
	{roleCoordinator, publish, api + "STREAM.MSG.GET." + leases, "the job's lease after a failed compare-and-set, from the bucket's leader", always},
	{roleCoordinator, publish, api + "DIRECT.GET." + manifest + ".$KV." + cairnjs.ManifestBucket + ".{job}.>", "its jobs' manifests and counters", always},
	{roleCoordinator, publish, api + "DIRECT.GET." + leases + ".>", "leases and registrations", always},
	{roleCoordinator, publish, api + "CONSUMER.CREATE." + cairnjs.ConfigStream + ".>", "follow config events and heads", always},
	{roleCoordinator, publish, api + "CONSUMER.MSG.NEXT." + cairnjs.ConfigStream + ".>", "read config events", always},
	{roleCoordinator, publish, api + "CONSUMER.DELETE." + cairnjs.ConfigStream + ".>", "stop following config events", always},
	{roleCoordinator, publish, api + "CONSUMER.CREATE." + manifest + ".*.$KV." + cairnjs.ManifestBucket + ".{job}.>", "list its jobs' manifests and savepoints", always},
	{roleCoordinator, publish, api + "CONSUMER.DELETE." + manifest + ".>", "end the listing", always},
	{roleCoordinator, publish, api + "CONSUMER.CREATE." + leases + ".>", "watch registrations, leases and replicas", always},
	{roleCoordinator, publish, api + "CONSUMER.DELETE." + leases + ".>", "stop watching", always},
	{roleCoordinator, publish, api + "INFO", "the account's limits, read before creating a KV bucket", always},
	{roleCoordinator, publish, api + "STREAM.INFO.{shared}", "look up every shared stream and bucket", always},
	{roleCoordinator, publish, api + "STREAM.CREATE.{shared}", "create them when missing", always},
	{roleCoordinator, publish, api + "STREAM.INFO.{legacy}", "migration: the store every job shared before", legacySnapshots},
	{roleCoordinator, publish, api + "STREAM.PURGE.{legacy}", "migration: retention of its objects", legacySnapshots},
	{roleCoordinator, publish, api + "DIRECT.GET.{legacy}", "migration: batched infos of its objects", legacySnapshots},
	{roleCoordinator, publish, api + "DIRECT.GET.{legacy}.>", "migration: an object's info", legacySnapshots},
	{roleCoordinator, publish, api + "CONSUMER.CREATE.{legacy}.>", "migration: listing it", legacySnapshots},
	{roleCoordinator, publish, api + "CONSUMER.DELETE.{legacy}.>", "migration: ending a listing of it", legacySnapshots},
	{roleCoordinator, denyPublish, "{p}.config.events.>", "config versions come from configsvc only", always},
	{roleCoordinator, subscribe, "{inbox}.>", "replies to its own requests", always},
	{roleCoordinator, subscribe, "$SRV.>", "micro discovery", always},
	{roleCoordinator, subscribe, "{p}.ack.{job}.*", "acks and declines of its jobs' instances", always},
	{roleCoordinator, subscribe, "{p}.ack.{job}", "acks of operators from before per-instance acks (rolling upgrade)", always},
	{roleCoordinator, subscribe, "{p}.status.*", "status requests", always},
	{roleCoordinator, subscribe, "{p}.coord.*.status.*", "status requests a standby forwarded", always},
	{roleCoordinator, subscribe, "{p}.job.members.remove.*", "member removals", always},
	{roleCoordinator, subscribe, "{p}.coord.*.members.remove.*", "the same, forwarded by a standby", always},
	{roleCoordinator, subscribe, "{p}.checkpoint.trigger.*", "manual checkpoints and savepoints", always},
	{roleCoordinator, subscribe, "{p}.checkpoint.list.*", "checkpoint listings", always},
	{roleCoordinator, subscribe, "{p}.checkpoint.delete.*", "savepoint deletions", always},
	{roleCoordinator, subscribe, "{p}.coord.*.checkpoint.trigger.*", "the same, forwarded by a standby", always},
	{roleCoordinator, subscribe, "{p}.coord.*.checkpoint.delete.*", "the same, forwarded by a standby", always},

	// operator: one user per instance of a job.
	{roleOperator, publish, "{p}.ack.{job}.{instance}", "acks and declines as itself only", always},
	{roleOperator, publish, "{p}.ack.{job}", "migration: acks of operators from before per-instance acks", legacyAcks},
	{roleOperator, publish, "{p}.checkpoints.{job}.members", "audit of a reset, an accepted input gap or re-emitted outputs", always},
	{roleOperator, publish, "{out}", "its outputs", always},
	{roleOperator, publish, "{p}.deadletter.{job}.{instance}", "its dead letters (poison records)", always},
	{roleOperator, publish, "$KV." + cairnjs.LeaseBucket + ".instance.{job}.{instance}", "its own registration and heartbeat", always},
	{roleOperator, publish, "$KV." + cairnjs.InstanceBucket + ".{job}.{instance}", "its own instance record (claimed at start, marked at a clean stop)", always},
	{roleOperator, publish, "$O." + cairnjs.SnapshotStore("{job}") + ".C.>", "snapshot upload into its job's store: chunks", always},
	{roleOperator, publish, "$O." + cairnjs.SnapshotStore("{job}") + ".M.>", "snapshot upload into its job's store: meta", always},
	{roleOperator, publish, api + "STREAM.INFO.{store}", "look up its job's snapshot store", always},
	{roleOperator, publish, api + "DIRECT.GET.{store}.>", "an object's info (restore, reuse of an unchanged snapshot)", always},
	{roleOperator, publish, api + "CONSUMER.CREATE.{store}.>", "snapshot download", always},
	{roleOperator, publish, api + "CONSUMER.DELETE.{store}.>", "end a download", always},
	{roleOperator, publish, api + "STREAM.INFO.{legacy}", "migration: restore from the store every job shared before", legacySnapshots},
	{roleOperator, publish, api + "DIRECT.GET.{legacy}.>", "migration: object infos in the store every job shared before", legacySnapshots},
	{roleOperator, publish, api + "CONSUMER.CREATE.{legacy}.>", "migration: downloads from it", legacySnapshots},
	{roleOperator, publish, api + "CONSUMER.DELETE.{legacy}.>", "migration: end a download from it", legacySnapshots},
	{roleOperator, publish, api + "DIRECT.GET." + manifest + ".$KV." + cairnjs.ManifestBucket + ".{job}.>", "its job's manifests, savepoints and id counter (barriers are checked against it)", always},
	{roleOperator, publish, api + "CONSUMER.CREATE." + manifest + ".*.$KV." + cairnjs.ManifestBucket + ".{job}.>", "list its job's manifests", always},
	{roleOperator, publish, api + "CONSUMER.DELETE." + manifest + ".>", "end the listing", always},
	{roleOperator, publish, api + "DIRECT.GET." + leases + ".$KV." + cairnjs.LeaseBucket + ".instance.{job}.{instance}", "its registration", always},
	{roleOperator, publish, api + "STREAM.MSG.GET." + leases, "its registration and the job's lease, from the bucket's leader (not scoped: no job's state)", always},
	{roleOperator, publish, api + "STREAM.MSG.GET." + records, "its instance record, from the bucket's leader (not scoped: no job's state)", always},
	{roleOperator, publish, api + "STREAM.MSG.GET." + cairnjs.CheckpointStream, "the job's last completed checkpoint, when its manifests are lost (not scoped: events only)", always},
	{roleOperator, publish, api + "CONSUMER.CREATE.{input}.*.{in}", "its input: an ordered consumer of its own subject", always},
	{roleOperator, publish, api + "CONSUMER.MSG.NEXT.{input}.>", "read its input", always},
	{roleOperator, publish, api + "CONSUMER.DELETE.{input}.>", "stop reading its input (consumer names are random and unlisted, not scoped)", always},
	{roleOperator, publish, api + "STREAM.MSG.GET.{input}", "input gap and removal checks by sequence (not scoped: a stream of its own isolates the input)", always},
	{roleOperator, publish, api + "STREAM.INFO.{input}", "look up its input stream", always},
	{roleOperator, publish, api + "STREAM.INFO.{output}", "look up its output stream", always},
	{roleOperator, publish, api + "STREAM.MSG.GET.{output}", "the last output of its subject after a start (not scoped: a stream of its own isolates the outputs)", always},
	{roleOperator, publish, api + "STREAM.INFO." + cairnjs.CheckpointStream, "look up the checkpoint event stream", always},
	{roleOperator, publish, api + "STREAM.INFO." + cairnjs.DeadLetterStream, "look up the dead-letter stream", always},
	{roleOperator, publish, api + "CONSUMER.CREATE." + cairnjs.DeadLetterStream + ".*.{p}.deadletter.{job}.{instance}", "read its own dead letters at start (a replay recognises them)", always},
	{roleOperator, publish, api + "CONSUMER.MSG.NEXT." + cairnjs.DeadLetterStream + ".>", "read its dead letters", always},
	{roleOperator, publish, api + "CONSUMER.DELETE." + cairnjs.DeadLetterStream + ".>", "end that read (consumer names are random and unlisted)", always},
	{roleOperator, publish, api + "STREAM.INFO." + manifest, "look up the manifest bucket", always},
	{roleOperator, publish, api + "STREAM.INFO." + leases, "look up the lease bucket", always},
	{roleOperator, publish, api + "STREAM.INFO." + records, "look up the instance bucket", always},
	{roleOperator, denyPublish, "{p}.config.>", "no config requests or events", always},
	{roleOperator, denyPublish, api + "STREAM.CREATE.>", "operators create nothing", always},
	{roleOperator, denyPublish, api + "STREAM.PURGE.>", "operators remove nothing", always},
	{roleOperator, subscribe, "{inbox}.>", "replies to its own requests", always},
	{roleOperator, subscribe, "$SRV.>", "micro discovery", always},
	{roleOperator, subscribe, "{p}.barrier.{job}", "its job's barriers", always},
	{roleOperator, subscribe, "{p}.checkpoints.{job}.completed", "its job's checkpoint outcomes (a CheckpointListener)", always},
	{roleOperator, subscribe, "{p}.checkpoints.{job}.aborted", "its job's aborted checkpoints (a CheckpointListener)", always},
	{roleOperator, subscribe, "{p}.op.{job}.{instance}.>", "its own endpoints: state, info and those added with AddEndpoint", always},

	// loadgen: publishes the input of the instances of its jobs.
	{roleLoadgen, publish, "{in}", "input events", always},
	{roleLoadgen, publish, api + "STREAM.INFO.{input}", "look up the input stream", always},
	{roleLoadgen, denyPublish, "{p}.config.>", "no config requests or events", always},
	{roleLoadgen, denyPublish, api + "STREAM.CREATE.>", "creates nothing", always},
	{roleLoadgen, denyPublish, api + "STREAM.PURGE.>", "removes nothing", always},
	{roleLoadgen, subscribe, "{inbox}.>", "replies to its own requests (publish acks)", always},
})

// denyDestructive adds to rs, for every role but admin, explicit denies of the JetStream
// API calls that remove or reconfigure a stream: already outside every allow list, they
// stay refused whatever an allow list is widened to.
func denyDestructive(rs []rule) []rule {
	for _, r := range roles[1:] {
		for _, call := range []string{"STREAM.DELETE.>", "STREAM.UPDATE.>", "STREAM.MSG.DELETE.>"} {
			rs = append(rs, rule{r, denyPublish, api + call, "no service removes or reconfigures a stream", always})
		}
	}
	return rs
}

// serviceRoles answer requests: they get allow_responses (one reply, within two minutes,
// to the reply subject of a message they received) instead of a publish right on inboxes.
var serviceRoles = map[role]bool{roleConfigsvc: true, roleCoordinator: true, roleOperator: true}

// sharedStreams are the streams every job shares: those cairnjs.Ensure creates, the KV
// buckets' included.
func sharedStreams() []string {
	var out []string
	for _, cfg := range (cairnjs.Options{}).StreamConfigs() {
		out = append(out, cfg.Name)
	}
	return append(out, manifest, leases, records)
}
