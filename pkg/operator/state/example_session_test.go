package state_test

import (
	"fmt"
	"time"

	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// gap closes a session: a user's session ends once gap has passed, in event time, since
// its last click.
const gap = 30 * time.Second

// session is a user's open session.
type session struct {
	Start, Last time.Time
	Clicks      int
}

// timerKey is the key, under timer/, of the timer due at due for user: the due time
// first, in 16 hex digits, so that the timers sort by it.
func timerKey(due time.Time, user string) string {
	return fmt.Sprintf("%016x/%s", due.UnixMilli(), user)
}

// applyClick is the Apply of a session window (a KeyedMachine's, with st the store
// operator.NewKeyed gives it) for one click of user at event time t. The watermark is
// the latest event time seen; the sessions whose timers are due by it close first,
// passed to emit in due order.
func applyClick(st *state.Store, user string, t time.Time, emit func(user string, s session)) error {
	sessions := state.NewMap(st, "session/", state.JSON[session]())
	timers := state.NewMap(st, "timer/", state.String) // the value is the user
	watermark := state.NewMap(st, "watermark", state.Int64)
	wm, _, err := watermark.Get("")
	if err != nil {
		return err
	}
	wm = max(wm, t.UnixMilli())
	if err := watermark.Put("", wm); err != nil {
		return err
	}
	// Fire the timers due by the watermark. Range goes in key order, so it stops at the
	// first timer not due: a record costs the timers it fires, not the whole index.
	var due []string // deleted after Range: fn must not change the store
	limit := fmt.Sprintf("%016x", wm)
	if err := timers.Range(func(key, _ string) bool {
		if key[:16] > limit {
			return false
		}
		due = append(due, key)
		return true
	}); err != nil {
		return err
	}
	for _, key := range due {
		u := key[17:]
		s, _, err := sessions.Get(u)
		if err != nil {
			return err
		}
		emit(u, s)
		sessions.Delete(u)
		timers.Delete(key)
	}
	// Open or extend the user's session, and move its timer.
	s, open, err := sessions.Get(user)
	if err != nil {
		return err
	}
	if open {
		timers.Delete(timerKey(s.Last.Add(gap), user))
		s.Clicks++
		if t.After(s.Last) {
			s.Last = t
		}
	} else {
		s = session{Start: t, Last: t, Clicks: 1}
	}
	if err := sessions.Put(user, s); err != nil {
		return err
	}
	return timers.Put(timerKey(s.Last.Add(gap), user), user)
}

// A session window on keyed state. Cairn's runtime has no timers: a Machine keeps them as
// keys of its store, ordered by due time, and fires them as event time advances with the
// records. They are checkpointed and restored with the rest of the state.
func ExampleStore_Range_sessionWindow() {
	st := state.New()
	emit := func(user string, s session) {
		fmt.Printf("%s: clicks=%d %s-%s\n", user, s.Clicks, s.Start.Format(time.TimeOnly), s.Last.Format(time.TimeOnly))
	}
	at := func(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
	for _, c := range []struct {
		user string
		sec  int64
	}{{"ann", 0}, {"bob", 10}, {"ann", 20}, {"bob", 50}, {"ann", 100}, {"cid", 200}} {
		if err := applyClick(st, c.user, at(c.sec), emit); err != nil {
			fmt.Println(err)
			return
		}
	}
	_ = state.NewMap(st, "session/", state.JSON[session]()).Range(func(user string, s session) bool {
		fmt.Printf("%s: open since %s\n", user, s.Start.Format(time.TimeOnly))
		return true
	})
	// Output:
	// bob: clicks=1 00:00:10-00:00:10
	// ann: clicks=2 00:00:00-00:00:20
	// bob: clicks=1 00:00:50-00:00:50
	// ann: clicks=1 00:01:40-00:01:40
	// cid: open since 00:03:20
}
