package chaos

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// operatorKillResult is one operator kill as it happened.
type operatorKillResult struct {
	instance     string
	graceful     bool          // SIGTERM rather than SIGKILL
	away         bool          // the long absence
	down         time.Duration // planned time until the restart
	afterBarrier bool          // aimed just after a barrier arrived
	// barrier is the newest barrier the killed run had received, 0 when it had received
	// none since it was ready.
	barrier uint64
	// midSnapshot: the killed run never acked (nor declined) that barrier; it died
	// while taking, storing or acking its snapshot.
	midSnapshot bool
	// firstSeq is the first sequence left on the instance's input subject right after the
	// stop (0: none left, or unknown when firstSeqErr is set).
	firstSeq    uint64
	firstSeqErr error
}

// duplicateResult is the duplicate start as it happened.
type duplicateResult struct {
	instance    string
	at          time.Time
	loser       string        // the process that exited
	exitedAfter time.Duration // duplicate start → that exit
	code        int
	named       bool // its ERROR named the incarnation that replaced it
	err         error
}

// failover is one kill of the lease holder and what followed.
type failover struct {
	at       time.Time
	holder   string // the killed coordinator's id
	proc     string
	interval time.Duration // the interval in force, from the status before the kill
	gap      time.Duration // kill → first barrier from another coordinator
	next     string        // the coordinator that sent it
	nextID   uint64
	err      error
}

// natsRestart is the nats-server restart as it happened.
type natsRestart struct {
	at          time.Time
	down        time.Duration
	ready       time.Duration // kill → JetStream answering again
	nextBarrier time.Duration // kill → first barrier
	completed   time.Duration // kill → first completion of a checkpoint triggered after it
	err         error
}

// configResult is one config change as configsvc answered it.
type configResult struct {
	at       time.Time
	interval time.Duration
	version  uint64
	attempts int
	err      error
}

// report is what a run did and found; String renders it for the test log.
type report struct {
	seed                 uint64
	start                time.Time
	stormStart, stormEnd time.Time
	logDir               string

	mu             sync.Mutex // guards the lists the timelines append to
	operatorKills  []operatorKillResult
	failovers      []failover
	natsRestarts   []natsRestart
	configs        []configResult
	exactness      []string
	outputs        string
	published      []int
	publishRetries int
	storedVersions uint64
	tally          eventTally
	barriers       int
	barrierIDs     [2]uint64 // first and last seen
	surprises      []string
	duplicate      *duplicateResult
	trimmed        []string // per instance, where its input starts after the storm
	fenced         []string // exits of a process replaced by another of its instance
}

// add applies f to the report under its lock.
func (r *report) add(f func(*report)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// operatorKillList returns the operator kills made so far.
func (r *report) operatorKillList() []operatorKillResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.operatorKills)
}

// configList returns the config changes made so far.
func (r *report) configList() []configResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.configs)
}

// holderKills counts the holder kills that happened; r.mu is held.
func (r *report) holderKills() int {
	n := 0
	for _, f := range r.failovers {
		if !f.at.IsZero() {
			n++
		}
	}
	return n
}

// natsRestartCount counts the nats-server restarts that happened; r.mu is held.
func (r *report) natsRestartCount() int {
	n := 0
	for _, x := range r.natsRestarts {
		if !x.at.IsZero() {
			n++
		}
	}
	return n
}

// shortfall says how the run fell short of acceptance item 1's counts, or "" when it did
// not.
func (r *report) shortfall() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	kills, terms, away := 0, 0, 0
	for _, k := range r.operatorKills {
		switch {
		case k.away:
			away++
		case k.graceful:
			terms++
		default:
			kills++
		}
	}
	if kills < 20 {
		s = append(s, fmt.Sprintf("%d operator kills, want at least 20", kills))
	}
	if terms < 5 {
		s = append(s, fmt.Sprintf("%d SIGTERM restarts, want at least 5", terms))
	}
	if away != 1 {
		s = append(s, fmt.Sprintf("%d long absences, want 1", away))
	}
	if r.duplicate == nil || r.duplicate.loser == "" {
		s = append(s, "no duplicate instance was started and replaced")
	}
	if n := r.holderKills(); n < 5 {
		s = append(s, fmt.Sprintf("%d holder kills, want at least 5", n))
	}
	if n := r.natsRestartCount(); n != 1 {
		s = append(s, fmt.Sprintf("%d NATS restarts, want 1", n))
	}
	return strings.Join(s, "; ")
}

// String renders the report.
func (r *report) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("")
	line("==== Cairn chaos report ====")
	line("seed               %d   (replay: "+replay+")", r.seed, r.seed)
	line("wall time          %s total, storm %s", time.Since(r.start).Round(time.Second), r.stormEnd.Sub(r.stormStart).Round(time.Second))

	aimed, mid, kills, terms, trimmed, untrimmed := 0, 0, 0, 0, 0, 0
	per := map[string]int{}
	var away *operatorKillResult
	for i, k := range r.operatorKills {
		switch {
		case k.away:
			away = &r.operatorKills[i]
		case k.graceful:
			terms++
		default:
			kills++
			per[k.instance]++
		}
		if k.afterBarrier {
			aimed++
		}
		if k.midSnapshot {
			mid++
		}
		switch {
		case k.firstSeqErr != nil:
		case k.firstSeq > 1:
			trimmed++
		default:
			untrimmed++
		}
	}
	var perInstance []string
	for _, inst := range slices.Sorted(maps.Keys(per)) {
		perInstance = append(perInstance, fmt.Sprintf("%s %d", inst, per[inst]))
	}
	line("operator kills     %d SIGKILLs (%s), each restarted; %d aimed just after a barrier, %d struck between a barrier and the instance's ack (SIGTERMs included); then all %d at once",
		kills, strings.Join(perInstance, ", "), aimed, mid, instances)
	line("SIGTERM restarts   %d, each drained and exited 0 unless reported", terms)
	if away != nil {
		how := "SIGKILL"
		if away.graceful {
			how = "SIGTERM"
		}
		line("long absence       %s stopped with %s and kept away %s (retain %d × the longest interval 1s = %s)",
			away.instance, how, away.down.Round(time.Millisecond), retain, retain*time.Second)
	}
	line("trimmed input      at %d of %d stops the instance's input no longer started at sequence 1 (%d unknown); after the storm: %s",
		trimmed, len(r.operatorKills), len(r.operatorKills)-trimmed-untrimmed, strings.Join(r.trimmed, ", "))
	if d := r.duplicate; d != nil {
		if d.loser == "" {
			line("duplicate          %s at %s: %v", d.instance, clock(d.at), d.err)
		} else {
			line("duplicate          second process of %s started %s; %s exited with code %d after %s; ERROR named the replacing incarnation: %t",
				d.instance, clock(d.at), d.loser, d.code, d.exitedAfter.Round(time.Millisecond), d.named)
		}
	}
	for _, f := range r.fenced {
		line("replaced           %s", f)
	}
	line("holder kills       %d SIGKILLs of the coordinator holding the lease, each restarted", r.holderKills())
	for _, n := range r.natsRestarts {
		if n.err != nil {
			line("NATS restarts      1 (down %s): %v", n.down.Round(time.Millisecond), n.err)
			continue
		}
		line("NATS restarts      1: down %s; after the kill: JetStream back %s, next barrier %s, next checkpoint completed %s",
			n.down.Round(time.Millisecond), n.ready.Round(time.Millisecond), n.nextBarrier.Round(time.Millisecond), n.completed.Round(time.Millisecond))
	}
	var accepted []string
	for _, c := range r.configs {
		if c.err != nil {
			accepted = append(accepted, fmt.Sprintf("%s: FAILED %v", c.interval, c.err))
			continue
		}
		s := fmt.Sprintf("v%d=%s", c.version, c.interval)
		if c.attempts > 1 {
			s += fmt.Sprintf(" (%d attempts)", c.attempts)
		}
		accepted = append(accepted, s)
	}
	line("config changes     %d: %s; the config stream holds %d versions", len(r.configs), strings.Join(accepted, ", "), r.storedVersions)
	total := 0
	for _, n := range r.published {
		total += n
	}
	line("events published   %d (%v per instance, %d keys each, %g/s per instance), %d publish retries", total, r.published, keys, rate, r.publishRetries)
	line("barriers seen      %d, ids %d..%d", r.barriers, r.barrierIDs[0], r.barrierIDs[1])
	reasons := make([]string, 0, len(r.tally.aborted))
	aborted := 0
	for _, reason := range slices.Sorted(maps.Keys(r.tally.aborted)) {
		reasons = append(reasons, fmt.Sprintf("%s %d", reason, r.tally.aborted[reason]))
		aborted += r.tally.aborted[reason]
	}
	line("checkpoints        %d completed, %d aborted (%s); highest id %d", r.tally.completed, aborted, strings.Join(reasons, ", "), r.tally.maxID)
	for _, e := range r.exactness {
		line("state              %s", e)
	}
	line("outputs            %s", r.outputs)
	line("fail-over gaps     holder kill → next barrier from another coordinator (lease TTL %s):", cairnjs.DefaultLeaseTTL)
	var worst time.Duration
	for i, f := range r.failovers {
		if f.err != nil {
			line("  #%d %s killed %s (%s): %v", i+1, clock(f.at), f.proc, f.holder, f.err)
			continue
		}
		worst = max(worst, f.gap)
		bound := cairnjs.DefaultLeaseTTL + f.interval
		over := ""
		if f.gap > bound {
			over = fmt.Sprintf(", OVER by %s", (f.gap - bound).Round(time.Millisecond))
		}
		line("  #%d %s killed %s (%s): %6s  (interval %s, TTL+interval %s%s) → barrier %d from %s",
			i+1, clock(f.at), f.proc, f.holder, f.gap.Round(time.Millisecond), f.interval, bound, over, f.nextID, f.next)
	}
	line("  max %s", worst.Round(time.Millisecond))
	if len(r.surprises) == 0 {
		line("unexpected exits   none")
	}
	for _, s := range r.surprises {
		line("unexpected exit    %s", s)
	}
	line("process logs       %s (kept when the test fails or CAIRN_CHAOS_LOGS is set)", r.logDir)
	return b.String()
}
