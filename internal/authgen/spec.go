package authgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Spec says what to generate users for. Its JSON form is the file `cairn auth --spec`
// reads (unknown fields are refused); see docs/security.md.
type Spec struct {
	// Prefix is the subject prefix of the wire contract; empty means "cairn".
	Prefix string `json:"prefix,omitempty"`
	// Account is the NATS account every user is in; empty means "CAIRN".
	Account string `json:"account,omitempty"`
	// Jobs are the jobs and their operator instances: one user per instance.
	Jobs []Job `json:"jobs"`
	// Coordinators get one user each; empty means one named "coordinator" for every job.
	Coordinators []Member `json:"coordinators,omitempty"`
	// Configsvc names the configsvc replicas, one user each; empty means one, "configsvc".
	Configsvc []string `json:"configsvc,omitempty"`
	// Loadgens are load generators, one user each, publishing the input of their jobs.
	Loadgens []Member `json:"loadgens,omitempty"`
	// Admins are people with the nats CLI, one user each; empty means one, "admin".
	Admins []string `json:"admins,omitempty"`
	// LegacySnapshots grants coordinators, and operators for reading, the object store
	// every job shared before stores were per job (CAIRN_SNAPSHOTS), while retained
	// checkpoints reference it (docs/compatibility.md). Its object subjects cannot be
	// scoped to a job: leave it off once the migration is done.
	LegacySnapshots bool `json:"legacy_snapshots,omitempty"`
	// LegacyAcks lets each operator also ack on its job's subject of before
	// (cairn.ack.<job>), for operators older than per-instance acks during a rolling
	// upgrade. On that subject an instance can ack as any instance of its job: leave it
	// off once every operator is upgraded.
	LegacyAcks bool `json:"legacy_acks,omitempty"`
}

// Job is one job and its operator instances.
type Job struct {
	Name      string   `json:"name"`
	Instances []string `json:"instances"`
	// Input is where the instances read; nil means stream CAIRN_INPUT, subject
	// <prefix>.input.<job>.<instance> (the reference operator's default).
	Input *Stream `json:"input,omitempty"`
	// Output is where the instances' outputs go; nil means stream CAIRN_OUTPUT, subject
	// <prefix>.output.<job>.<instance>.
	Output *Stream `json:"output,omitempty"`
}

// Stream is a stream and the subjects (or filters) of it that one instance uses;
// "{instance}" in a subject stands for the instance's id, "{job}" for the job's name. With
// {instance} each instance has subjects of its own; without, every instance of the job
// gets the same.
type Stream struct {
	Stream   string   `json:"stream"`
	Subjects []string `json:"subjects"`
}

// Member is a coordinator or load generator and the jobs it serves; no jobs means every
// job of the spec.
type Member struct {
	Name string   `json:"name"`
	Jobs []string `json:"jobs,omitempty"`
}

// LoadSpec reads a Spec from JSON, refusing unknown fields and trailing data, and
// validates it with its defaults filled in.
func LoadSpec(r io.Reader) (Spec, error) {
	var s Spec
	data, err := io.ReadAll(r)
	if err != nil {
		return s, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("auth spec: %w", err)
	}
	if dec.More() {
		return s, errors.New("auth spec: data after the JSON object")
	}
	s = s.WithDefaults()
	return s, s.Validate()
}

// WithDefaults fills the empty optional fields.
func (s Spec) WithDefaults() Spec {
	if s.Prefix == "" {
		s.Prefix = cairnjs.DefaultPrefix
	}
	if s.Account == "" {
		s.Account = "CAIRN"
	}
	if len(s.Coordinators) == 0 {
		s.Coordinators = []Member{{Name: "coordinator"}}
	}
	if len(s.Configsvc) == 0 {
		s.Configsvc = []string{"configsvc"}
	}
	if len(s.Admins) == 0 {
		s.Admins = []string{"admin"}
	}
	jobs := make([]Job, len(s.Jobs))
	for i, j := range s.Jobs {
		if j.Input == nil {
			j.Input = &Stream{Stream: cairnjs.InputStream, Subjects: []string{s.Prefix + ".input.{job}.{instance}"}}
		}
		if j.Output == nil {
			j.Output = &Stream{Stream: cairnjs.OutputStream, Subjects: []string{s.Prefix + ".output.{job}.{instance}"}}
		}
		jobs[i] = j
	}
	s.Jobs = jobs
	return s
}

// Validate reports the first thing that cannot be generated, naming it.
func (s Spec) Validate() error {
	if err := validSubject(s.Prefix, false); err != nil {
		return fmt.Errorf("auth spec: prefix %q: %w", s.Prefix, err)
	}
	if err := messages.ValidateName("account", s.Account); err != nil {
		return fmt.Errorf("auth spec: %w", err)
	}
	if len(s.Jobs) == 0 {
		return errors.New("auth spec: no jobs; give at least one job with its instances")
	}
	names := map[string]bool{}
	for _, j := range s.Jobs {
		if err := messages.ValidateName("job", j.Name); err != nil {
			return fmt.Errorf("auth spec: %w", err)
		}
		if names[j.Name] {
			return fmt.Errorf("auth spec: job %s is given twice", j.Name)
		}
		names[j.Name] = true
		if len(j.Instances) == 0 {
			return fmt.Errorf("auth spec: job %s has no instances", j.Name)
		}
		for i, inst := range j.Instances {
			if err := messages.ValidateName("instance", inst); err != nil {
				return fmt.Errorf("auth spec: job %s: %w", j.Name, err)
			}
			if slices.Contains(j.Instances[:i], inst) {
				return fmt.Errorf("auth spec: job %s: instance %s is given twice", j.Name, inst)
			}
		}
		for what, st := range map[string]*Stream{"input": j.Input, "output": j.Output} {
			if err := st.validate(); err != nil {
				return fmt.Errorf("auth spec: job %s: %s: %w", j.Name, what, err)
			}
		}
	}
	if err := s.validateMembers("coordinator", s.Coordinators, names); err != nil {
		return err
	}
	if err := s.validateMembers("load generator", s.Loadgens, names); err != nil {
		return err
	}
	for _, set := range []struct {
		what  string
		names []string
	}{{"configsvc", s.Configsvc}, {"admin", s.Admins}} {
		for i, n := range set.names {
			if err := messages.ValidateName(set.what, n); err != nil {
				return fmt.Errorf("auth spec: %w", err)
			}
			if slices.Contains(set.names[:i], n) {
				return fmt.Errorf("auth spec: %s %s is given twice", set.what, n)
			}
		}
	}
	return nil
}

func (s Spec) validateMembers(what string, ms []Member, jobs map[string]bool) error {
	for i, m := range ms {
		if err := messages.ValidateName(what, m.Name); err != nil {
			return fmt.Errorf("auth spec: %w", err)
		}
		if slices.ContainsFunc(ms[:i], func(o Member) bool { return o.Name == m.Name }) {
			return fmt.Errorf("auth spec: %s %s is given twice", what, m.Name)
		}
		for _, j := range m.Jobs {
			if !jobs[j] {
				return fmt.Errorf("auth spec: %s %s: job %s is not among the spec's jobs", what, m.Name, j)
			}
		}
	}
	return nil
}

func (st *Stream) validate() error {
	if st.Stream == "" || strings.ContainsAny(st.Stream, ".*> \t\r\n/\\") {
		return fmt.Errorf("stream %q: not a stream name (no dots, wildcards, spaces or slashes)", st.Stream)
	}
	if len(st.Subjects) == 0 {
		return fmt.Errorf("stream %s: no subjects", st.Stream)
	}
	for _, subj := range st.Subjects {
		if err := validSubject(strings.NewReplacer("{job}", "j", "{instance}", "i").Replace(subj), true); err != nil {
			return fmt.Errorf("subject %q of stream %s: %w", subj, st.Stream, err)
		}
	}
	return nil
}

// validSubject checks that s is a subject (or, with wildcards, a filter) that a generated
// config can quote: cairnjs.ValidateSubject's rules, and no quotes.
func validSubject(s string, wildcards bool) error {
	if strings.Contains(s, `"`) {
		return errors.New("quotes are not allowed")
	}
	return cairnjs.ValidateSubject(s, wildcards)
}

// job returns the spec's job named name.
func (s Spec) job(name string) Job {
	for _, j := range s.Jobs {
		if j.Name == name {
			return j
		}
	}
	return Job{}
}

// jobsOf returns the jobs m serves: its own list, or every job of the spec.
func (s Spec) jobsOf(m Member) []Job {
	if len(m.Jobs) == 0 {
		return s.Jobs
	}
	out := make([]Job, len(m.Jobs))
	for i, name := range m.Jobs {
		out[i] = s.job(name)
	}
	return out
}
