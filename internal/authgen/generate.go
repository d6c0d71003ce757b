package authgen

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// User is one generated NATS user: the credential of one process.
type User struct {
	// Name says whose it is: op.<job>.<instance>, coord.<name>, configsvc.<name>,
	// loadgen.<name> or admin.<name>. Files are named after it.
	Name string
	// Role is admin, configsvc, coordinator, operator or loadgen.
	Role string
	// Job and Instance are an operator's; Jobs a coordinator's or load generator's.
	Job, Instance string
	Jobs          []string
	// InboxPrefix replaces _INBOX in the user's reply subjects (cairnjs.EnvInboxPrefix); it
	// may subscribe to no other inbox. Empty for admins, who may subscribe to anything.
	InboxPrefix string
	Permissions Permissions
	// PublicKey is the user's nkey, which the server config holds; Seed its secret seed.
	PublicKey string
	Seed      []byte
}

// Permissions are a user's subjects.
type Permissions struct {
	Publish, DenyPublish, Subscribe []string
	// AllowResponses lets the user publish one reply, within two minutes, to the reply
	// subject of each message it received.
	AllowResponses bool
}

// Seeds gives the seed to keep for a user name; a user it has none for gets a new nkey.
type Seeds func(user string) ([]byte, bool)

// Generate derives every user of spec (validated, defaults filled) with its permissions
// and nkey. Users come in a stable order: admins, configsvc replicas, coordinators,
// operators (by job, then instance, as the spec lists them), load generators.
func Generate(spec Spec, seeds Seeds) ([]User, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	var users []User
	for _, n := range spec.Admins {
		users = append(users, User{Name: "admin." + n, Role: string(roleAdmin)})
	}
	for _, n := range spec.Configsvc {
		users = append(users, User{Name: "configsvc." + n, Role: string(roleConfigsvc), InboxPrefix: "_INBOX.configsvc." + n})
	}
	for _, c := range spec.Coordinators {
		users = append(users, User{Name: "coord." + c.Name, Role: string(roleCoordinator), Jobs: jobNames(spec.jobsOf(c)), InboxPrefix: "_INBOX.coord." + c.Name})
	}
	for _, j := range spec.Jobs {
		for _, inst := range j.Instances {
			users = append(users, User{
				Name: "op." + j.Name + "." + inst, Role: string(roleOperator), Job: j.Name, Instance: inst, Jobs: []string{j.Name},
				InboxPrefix: "_INBOX.op." + j.Name + "." + inst,
			})
		}
	}
	for _, l := range spec.Loadgens {
		users = append(users, User{Name: "loadgen." + l.Name, Role: string(roleLoadgen), Jobs: jobNames(spec.jobsOf(l)), InboxPrefix: "_INBOX.loadgen." + l.Name})
	}
	for i := range users {
		u := &users[i]
		u.Permissions = permissions(spec, u)
		seed, ok := seeds(u.Name)
		var kp nkeys.KeyPair
		var err error
		if ok {
			kp, err = nkeys.FromSeed(seed)
		} else {
			kp, err = nkeys.CreateUser()
		}
		if err != nil {
			return nil, fmt.Errorf("nkey of user %s: %w", u.Name, err)
		}
		if u.PublicKey, err = kp.PublicKey(); err != nil {
			return nil, fmt.Errorf("nkey of user %s: %w", u.Name, err)
		}
		if !nkeys.IsValidPublicUserKey(u.PublicKey) {
			return nil, fmt.Errorf("nkey of user %s: the seed kept is not a user's (public key %s)", u.Name, u.PublicKey)
		}
		if u.Seed, err = kp.Seed(); err != nil {
			return nil, fmt.Errorf("nkey of user %s: %w", u.Name, err)
		}
	}
	return users, nil
}

// NoSeeds keeps no seed: every user gets a new nkey.
func NoSeeds(string) ([]byte, bool) { return nil, false }

func jobNames(jobs []Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.Name
	}
	return out
}

// permissions expands the rules of u's role for u.
func permissions(spec Spec, u *User) Permissions {
	sc := scope{spec: spec, user: u}
	for _, name := range u.Jobs {
		sc.jobs = append(sc.jobs, spec.job(name))
	}
	var p Permissions
	for _, r := range rules {
		if string(r.role) != u.Role || !applies(spec, r.legacy) {
			continue
		}
		subjects := sc.expand(r.subject)
		switch r.kind {
		case publish:
			p.Publish = appendNew(p.Publish, subjects...)
		case denyPublish:
			p.DenyPublish = appendNew(p.DenyPublish, subjects...)
		case subscribe:
			p.Subscribe = appendNew(p.Subscribe, subjects...)
		}
	}
	p.AllowResponses = serviceRoles[role(u.Role)]
	return p
}

// applies reports whether a rule of migration l applies to spec.
func applies(spec Spec, l legacy) bool {
	switch l {
	case legacySnapshots:
		return spec.LegacySnapshots
	case legacyAcks:
		return spec.LegacyAcks
	}
	return true
}

func appendNew(list []string, items ...string) []string {
	for _, it := range items {
		if !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// scope expands rule templates for one user.
type scope struct {
	spec Spec
	user *User
	// jobs are the jobs the user serves.
	jobs []Job
}

// perJob are the placeholders that take a value per served job.
var perJob = []string{"{job}", "{instance}", "{input}", "{output}", "{in}", "{out}", "{store}"}

// expand returns the subjects tmpl stands for, for the user: none when the template needs
// what the user lacks (an instance, a job).
func (sc scope) expand(tmpl string) []string {
	base := strings.NewReplacer(
		"{p}", sc.spec.Prefix,
		"{inbox}", sc.user.InboxPrefix,
		"{legacy}", cairnjs.ObjectStream(cairnjs.SnapshotBucket),
	).Replace(tmpl)
	if strings.Contains(tmpl, "{inbox}") && sc.user.InboxPrefix == "" {
		return nil
	}
	outs := []string{base}
	if slices.ContainsFunc(perJob, func(ph string) bool { return strings.Contains(base, ph) }) {
		outs = nil
		for _, j := range sc.jobs {
			outs = append(outs, sc.forJob(base, j)...)
		}
	}
	if strings.Contains(base, "{shared}") {
		var all []string
		for _, s := range outs {
			for _, st := range sharedStreams() {
				all = append(all, strings.ReplaceAll(s, "{shared}", st))
			}
		}
		outs = all
	}
	return outs
}

// forJob expands the per-job placeholders of s for job j.
func (sc scope) forJob(s string, j Job) []string {
	instances := j.Instances
	if sc.user.Instance != "" {
		instances = []string{sc.user.Instance}
	} else if strings.Contains(s, "{instance}") || strings.Contains(s, "{out}") {
		return nil // an instance's own subjects: operators only
	}
	s = strings.NewReplacer(
		"{job}", j.Name,
		"{input}", j.Input.Stream,
		"{output}", j.Output.Stream,
		"{store}", cairnjs.ObjectStream(cairnjs.SnapshotStore(j.Name)),
	).Replace(s)
	subjects := func(st *Stream) []string {
		var out []string
		for _, inst := range instances {
			for _, subj := range st.Subjects {
				out = append(out, strings.NewReplacer("{job}", j.Name, "{instance}", inst).Replace(subj))
			}
		}
		return out
	}
	if before, ok := strings.CutSuffix(s, ".*.{in}"); ok && len(j.Input.Subjects) > 1 {
		// A consumer of several subjects is created without a subject in its API subject
		// (CONSUMER.CREATE.<stream>.<name>): the grant cannot name them.
		return []string{before + ".*"}
	}
	outs := []string{s}
	for _, sub := range []struct {
		ph string
		st *Stream
	}{{"{in}", j.Input}, {"{out}", j.Output}} {
		ph, st := sub.ph, sub.st
		if !strings.Contains(s, ph) {
			continue
		}
		var next []string
		for _, o := range outs {
			for _, subj := range subjects(st) {
				next = append(next, strings.ReplaceAll(o, ph, subj))
			}
		}
		outs = next
	}
	for i, o := range outs {
		outs[i] = strings.ReplaceAll(o, "{instance}", sc.user.Instance)
	}
	return outs
}
