package cairnjs

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPrefix is the subject prefix of the wire contract.
const DefaultPrefix = "cairn"

// Subjects builds the subjects of the wire contract under a prefix.
type Subjects struct {
	// Prefix is the first token(s) of every subject; empty means DefaultPrefix.
	Prefix string
}

func (s Subjects) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

func (s Subjects) join(tokens ...string) string {
	return s.p() + "." + strings.Join(tokens, ".")
}

// ConfigSet is the subject of set requests for job ("*" for all).
func (s Subjects) ConfigSet(job string) string { return s.join("config", "set", job) }

// ConfigGet is the subject of get requests for job ("*" for all).
func (s Subjects) ConfigGet(job string) string { return s.join("config", "get", job) }

// ConfigHistory is the subject of history requests for job ("*" for all).
func (s Subjects) ConfigHistory(job string) string { return s.join("config", "history", job) }

// ConfigEvents is the subject config events of job are published on ("*" for all).
func (s Subjects) ConfigEvents(job string) string { return s.join("config", "events", job) }

// ConfigHead is the subject of job's config head in CAIRN_CONFIG ("*" for all): a copy of
// the newest config event configsvc accepted, written after each, so that whatever else is
// published on ConfigEvents(job) can neither hide the version in force nor push it out. It
// has one token more than ConfigEvents, so ConfigEvents("*") does not match it.
func (s Subjects) ConfigHead(job string) string { return s.join("config", "events", job, "head") }

// ParseConfigEvents returns the job a ConfigEvents or ConfigHead subject names and whether
// it is the head. ok is false for any other subject.
func (s Subjects) ParseConfigEvents(subject string) (job string, head, ok bool) {
	rest, found := strings.CutPrefix(subject, s.join("config", "events")+".")
	if !found {
		return "", false, false
	}
	job, tail, more := strings.Cut(rest, ".")
	switch {
	case job == "", more && tail != "head":
		return "", false, false
	}
	return job, more, true
}

// Barrier is the subject barriers of job are sent on.
func (s Subjects) Barrier(job string) string { return s.join("barrier", job) }

// InstanceAck is the subject instance of job sends its acks and declines on ("*" for
// all): one subject per instance, so that a NATS permission can let an operator's
// credential ack as its own instance only. Coordinators drop an ack whose job or instance
// differs from its subject's.
func (s Subjects) InstanceAck(job, instance string) string { return s.join("ack", job, instance) }

// Ack is the subject on which operators older than InstanceAck send the acks and
// declines of job ("*" for all). Coordinators still take acks on it, for a rolling
// upgrade (docs/compatibility.md); an auth config denies it once every operator is
// upgraded.
func (s Subjects) Ack(job string) string { return s.join("ack", job) }

// ParseAck returns the job and instance an ack subject names: InstanceAck's job and
// instance, or Ack's job and an empty instance. ok is false for any other subject.
func (s Subjects) ParseAck(subject string) (job, instance string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.join("ack")+".")
	if !found {
		return "", "", false
	}
	job, instance, two := strings.Cut(rest, ".")
	switch {
	case job == "", two && (instance == "" || strings.Contains(instance, ".")):
		return "", "", false
	}
	return job, instance, true
}

// CheckpointEvent is the subject of checkpoint events of job with the outcome
// ("completed", "aborted", or "*").
func (s Subjects) CheckpointEvent(job, outcome string) string {
	return s.join("checkpoints", job, outcome)
}

// ParseCheckpointEvent returns the job and outcome a CheckpointEvent subject names. ok is
// false for any other subject, MemberEvents' and Alarms' included.
func (s Subjects) ParseCheckpointEvent(subject string) (job, outcome string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.join("checkpoints")+".")
	if !found {
		return "", "", false
	}
	job, outcome, two := strings.Cut(rest, ".")
	switch {
	case job == "", !two, outcome != "completed" && outcome != "aborted":
		return "", "", false
	}
	return job, outcome, true
}

// MemberEvents is the subject of job's member audit events in CAIRN_CHECKPOINTS ("*"
// for all).
func (s Subjects) MemberEvents(job string) string { return s.join("checkpoints", job, "members") }

// Alarms is the subject of job's alarm events in CAIRN_CHECKPOINTS ("*" for all).
func (s Subjects) Alarms(job string) string { return s.join("checkpoints", job, "alarms") }

// MembersRemove is the subject of member removal requests for job ("*" for all).
func (s Subjects) MembersRemove(job string) string { return s.join("job", "members", "remove", job) }

// Status is the subject of status requests for job ("*" for all).
func (s Subjects) Status(job string) string { return s.join("status", job) }

// CoordinatorStatus is the subject on which coordinator id answers status requests for
// job directly; standbys forward cairn.status.<job> to the lease holder's.
func (s Subjects) CoordinatorStatus(id, job string) string { return s.join("coord", id, "status", job) }

// CoordinatorMembersRemove is the subject on which coordinator id answers member removal
// requests for job directly; standbys forward cairn.job.members.remove.<job> to the lease
// holder's.
func (s Subjects) CoordinatorMembersRemove(id, job string) string {
	return s.join("coord", id, "members", "remove", job)
}

// CheckpointTrigger is the subject of manual checkpoint and savepoint requests for job
// ("*" for all).
func (s Subjects) CheckpointTrigger(job string) string { return s.join("checkpoint", "trigger", job) }

// CheckpointList is the subject of requests listing job's checkpoints and savepoints ("*"
// for all).
func (s Subjects) CheckpointList(job string) string { return s.join("checkpoint", "list", job) }

// CheckpointDelete is the subject of savepoint deletion requests for job ("*" for all).
func (s Subjects) CheckpointDelete(job string) string { return s.join("checkpoint", "delete", job) }

// CoordinatorCheckpoint is the subject on which coordinator id answers checkpoint
// requests of kind ("trigger", "delete") for job directly; standbys forward
// cairn.checkpoint.<kind>.<job> to the lease holder's.
func (s Subjects) CoordinatorCheckpoint(id, kind, job string) string {
	return s.join("coord", id, "checkpoint", kind, job)
}

// Input is the default input subject of a reference operator instance.
func (s Subjects) Input(job, instance string) string { return s.join("input", job, instance) }

// Output is the default output subject of a reference operator instance.
func (s Subjects) Output(job, instance string) string { return s.join("output", job, instance) }

// DeadLetter is the subject of an operator instance's dead letters in CAIRN_DEADLETTER
// ("*" for all): the input records it could not process.
func (s Subjects) DeadLetter(job, instance string) string {
	return s.join("deadletter", job, instance)
}

// OperatorState is the subject an operator instance answers state requests on.
func (s Subjects) OperatorState(job, instance string) string {
	return s.join("op", job, instance, "state")
}

// OperatorInfo is the subject an operator instance answers info requests on.
func (s Subjects) OperatorInfo(job, instance string) string {
	return s.join("op", job, instance, "info")
}

// ValidateSubject checks that s is a NATS subject or, with wildcards, a subject filter:
// non-empty tokens separated by dots, no white space, '*' and '>' only as whole tokens and
// '>' only as the last one.
func ValidateSubject(s string, wildcards bool) error {
	switch {
	case s == "":
		return errors.New("empty")
	case strings.ContainsAny(s, " \t\r\n"):
		return errors.New("white space is not allowed")
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return fmt.Errorf("token %d is empty", i+1)
		case !wildcards && strings.ContainsAny(t, "*>"):
			return errors.New("wildcards are not allowed")
		case t == ">" && i != len(tokens)-1:
			return errors.New("'>' is only allowed as the last token")
		case len(t) > 1 && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("token %q mixes a wildcard with other characters", t)
		}
	}
	return nil
}
