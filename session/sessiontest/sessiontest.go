// Package sessiontest is the conformance suite for session.Store
// implementations. A store passes when Run passes against it:
//
//	func TestConformance(t *testing.T) {
//		sessiontest.Run(t, sessiontest.Harness{
//			New: func(t testing.TB) session.Store { return openEmptyStore(t) },
//		})
//	}
//
// The suite checks the contract documented on session.Store: round trips,
// error sentinels, state transitions, paging, dense log sequence numbers under
// concurrent appends, and (with Harness.Peer) two store values that share one
// database, as two processes would. A store that implements session.Leaser
// is checked for it too (the Leases subtests): one holder at a time under
// concurrent acquirers on both store values, expiry and takeover, lost and
// released leases, growing fencing tokens, the shared enabled flag, and
// (when implemented) batches, fenced writes and the roster of processes. A
// store that implements session.Pinner is checked for it (the Pins
// subtests): round trips on both store values, renewal and running out at
// the caller's now, idempotent removal, concurrent pins, and refused input.
package sessiontest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

// Harness tells the suite how to get stores.
type Harness struct {
	// New returns a store with no sessions in it. It is called once per
	// subtest and should register its cleanup with t.
	New func(t testing.TB) session.Store

	// Peer returns a second, independent store value on the same data as s,
	// the way another process would open it. Nil means s itself is used,
	// which suits stores that cannot be shared between processes.
	Peer func(t testing.TB, s session.Store) session.Store
}

// Writers is how many goroutines the concurrency tests run at once.
const Writers = 8

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, h Harness) {
	require.NotNil(t, h.New, "sessiontest: Harness.New is required")
	if h.Peer == nil {
		h.Peer = func(_ testing.TB, s session.Store) session.Store { return s }
	}
	s := suite{h}
	t.Run("CreateGet", s.createGet)
	t.Run("CreateWithID", s.createWithID)
	t.Run("CreateInvalid", s.createInvalid)
	t.Run("NotFound", s.notFound)
	t.Run("Lifecycle", s.lifecycle)
	t.Run("Transitions", s.transitions)
	t.Run("UpdateInvalid", s.updateInvalid)
	t.Run("Log", s.log)
	t.Run("ConcurrentAppend", s.concurrentAppend)
	t.Run("ConcurrentEnd", s.concurrentEnd)
	t.Run("ListPaging", s.listPaging)
	t.Run("ListInvalid", s.listInvalid)
	t.Run("Latest", s.latest)
	t.Run("Peer", s.peer)
	t.Run("CanceledContext", s.canceledContext)
	t.Run("Leases", s.runLeases)
	t.Run("Pins", s.runPins)
}

type suite struct{ h Harness }

// base has nanoseconds and a non-UTC zone, to check normalization.
var base = time.Date(2026, 11, 25, 22, 0, 0, 123456789, time.FixedZone("CET", 3600))

func child(job string, start time.Time) session.Session {
	return session.Session{Job: job, Kind: session.KindChild, State: session.StateStarting, Start: start}
}

func (s suite) createGet(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	in := child("Daily DB Job PostgreSQL Log Backup", base)
	in.ParentID = "parent-1"
	got, err := st.Create(ctx, in)
	require.NoError(t, err)
	require.NotEmpty(t, got.ID, "Create assigns an id")
	assert.Equal(t, time.UTC, got.Start.Location(), "times come back in UTC")
	assert.True(t, got.Start.Equal(base.Truncate(time.Microsecond)), "start truncated to microseconds: %v", got.Start)
	assert.Equal(t, 0, got.Start.Nanosecond()%1000)

	back, err := st.Get(ctx, got.ID)
	require.NoError(t, err)
	assert.Equal(t, got, back)
	assert.Equal(t, "parent-1", back.ParentID)
	assert.Equal(t, session.StateStarting, back.State)
	assert.True(t, back.End.IsZero())

	other, err := st.Create(ctx, in)
	require.NoError(t, err)
	assert.NotEqual(t, got.ID, other.ID, "generated ids are unique")
}

func (s suite) createWithID(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	in := child("job", base)
	in.ID = "my-id"
	got, err := st.Create(ctx, in)
	require.NoError(t, err)
	assert.Equal(t, "my-id", got.ID)
	_, err = st.Create(ctx, in)
	require.ErrorIs(t, err, session.ErrExists)
}

func (s suite) createInvalid(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	ok := child("job", base)
	tests := map[string]func(*session.Session){
		"no job":          func(x *session.Session) { x.Job = "" },
		"unknown kind":    func(x *session.Session) { x.Kind = "grandchild" },
		"parent of child": func(x *session.Session) { x.Kind = session.KindParent; x.ParentID = "p" },
		"ended state":     func(x *session.Session) { x.State = session.StateSuccess; x.End = base.Add(time.Hour) },
		"unknown state":   func(x *session.Session) { x.State = "paused" },
		"no start":        func(x *session.Session) { x.Start = time.Time{} },
		"end time":        func(x *session.Session) { x.End = base.Add(time.Hour) },
		"negative files":  func(x *session.Session) { x.Counters.Files = -1 },
		"instance without machine": func(x *session.Session) {
			x.Counters.Instances = []session.InstanceCounters{{DataDir: "/data"}}
		},
		"negative instance bytes": func(x *session.Session) {
			x.Counters.Instances = []session.InstanceCounters{{Machine: "vm1", Bytes: -1}}
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			in := ok
			mutate(&in)
			_, err := st.Create(ctx, in)
			require.ErrorIs(t, err, session.ErrInvalid)
		})
	}
	p, err := st.List(ctx, session.Query{Job: "job"})
	require.NoError(t, err)
	assert.Empty(t, p.Sessions, "refused sessions are not stored")
}

func (s suite) notFound(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	_, err := st.Get(ctx, "no-such-session")
	require.ErrorIs(t, err, session.ErrNotFound)
	missing := child("job", base)
	missing.ID = "no-such-session"
	missing.State = session.StateWorking
	require.ErrorIs(t, st.Update(ctx, missing), session.ErrNotFound)
	_, err = st.Append(ctx, "no-such-session", session.Entry{Time: base, Severity: session.SeverityInfo, Message: "x"})
	require.ErrorIs(t, err, session.ErrNotFound)
	_, err = st.Log(ctx, "no-such-session", 0, 10)
	require.ErrorIs(t, err, session.ErrNotFound)
}

func (s suite) lifecycle(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	cur, err := st.Create(ctx, child("job", base))
	require.NoError(t, err)

	cur.State = session.StateWorking
	require.NoError(t, st.Update(ctx, cur))
	cur.Counters = session.Counters{
		Files: 3, Bytes: 3 << 24,
		FirstSegment: "000000010000000000000001", LastSegment: "000000010000000000000003",
		FirstLSN: 0x1000028, LastLSN: 0x3FFFFFF | 1<<40,
		Instances: []session.InstanceCounters{
			{Machine: "vm1", DataDir: "/var/lib/postgresql/15/main", SystemID: 1<<63 + 5, Files: 2, Bytes: 2 << 24,
				FirstSegment: "000000010000000000000001", LastSegment: "000000010000000000000002", FirstLSN: 0x1000028, LastLSN: 0x3000000},
			{Machine: "vm1", DataDir: "/var/lib/postgresql/17/main", SystemID: 7, Files: 1, Bytes: 1 << 24,
				FirstSegment: "000000010000000000000003", LastSegment: "000000010000000000000003", FirstLSN: 0x3000000, LastLSN: 0x3FFFFFF | 1<<40},
			{Machine: "vm2"},
		},
	}
	require.NoError(t, st.Update(ctx, cur), "a working session may be updated again")
	require.NoError(t, st.Update(ctx, cur), "repeating an update is harmless")

	cur.State = session.StateWarning
	cur.End = base.Add(15*time.Minute + 7*time.Nanosecond)
	cur.Result = "1 warning"
	require.NoError(t, st.Update(ctx, cur))

	got, err := st.Get(ctx, cur.ID)
	require.NoError(t, err)
	assert.Equal(t, session.StateWarning, got.State)
	assert.Equal(t, cur.Counters, got.Counters, "with each instance's counters, in order")
	assert.Equal(t, wal.LSN(0x3FFFFFF|1<<40), got.Counters.LastLSN)
	mine, err := st.Get(ctx, cur.ID)
	require.NoError(t, err)
	mine.Counters.Instances[0].Files = 99
	reread, err := st.Get(ctx, cur.ID)
	require.NoError(t, err)
	assert.Equal(t, int64(2), reread.Counters.Instances[0].Files, "a record read is the caller's copy")
	assert.Equal(t, "1 warning", got.Result)
	assert.True(t, got.End.Equal(base.Add(15*time.Minute).Truncate(time.Microsecond)))
	assert.Equal(t, time.UTC, got.End.Location())

	back := got
	back.State = session.StateWorking
	back.End = time.Time{}
	err = st.Update(ctx, back)
	require.ErrorIs(t, err, session.ErrInvalidTransition, "Warning back to Working is refused")
	var te *session.TransitionError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, session.StateWarning, te.From)
	assert.Equal(t, session.StateWorking, te.To)

	again, err := st.Get(ctx, cur.ID)
	require.NoError(t, err)
	assert.Equal(t, got, again, "a refused update changes nothing")
}

// reach drives a new session to state via allowed steps.
func reach(t *testing.T, st session.Store, job string, state session.State) session.Session {
	t.Helper()
	ctx := context.Background()
	cur, err := st.Create(ctx, child(job, base))
	require.NoError(t, err)
	if state == session.StateStarting {
		return cur
	}
	cur.State = session.StateWorking
	require.NoError(t, st.Update(ctx, cur))
	if state != session.StateWorking {
		cur.State = state
		cur.End = base.Add(time.Minute)
		require.NoError(t, st.Update(ctx, cur))
	}
	return cur
}

func (s suite) transitions(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	states := []session.State{session.StateStarting, session.StateWorking, session.StateSuccess,
		session.StateWarning, session.StateFailed, session.StateStopped}
	for _, from := range states {
		for _, to := range states {
			t.Run(fmt.Sprintf("%s_to_%s", from, to), func(t *testing.T) {
				cur := reach(t, st, "job", from)
				next := cur
				next.State = to
				next.End = time.Time{}
				if to.Final() {
					next.End = base.Add(2 * time.Minute)
				}
				err := st.Update(ctx, next)
				if session.CanTransition(from, to) {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, session.ErrInvalidTransition)
				}
				got, err := st.Get(ctx, cur.ID)
				require.NoError(t, err)
				if session.CanTransition(from, to) {
					assert.Equal(t, to, got.State)
				} else {
					assert.Equal(t, from, got.State)
				}
			})
		}
	}
}

func (s suite) updateInvalid(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	cur := reach(t, st, "job", session.StateWorking)
	tests := map[string]func(*session.Session){
		"job changes":      func(x *session.Session) { x.Job = "other" },
		"kind changes":     func(x *session.Session) { x.Kind = session.KindParent },
		"parent changes":   func(x *session.Session) { x.ParentID = "p2" },
		"start changes":    func(x *session.Session) { x.Start = base.Add(time.Second) },
		"ended, no end":    func(x *session.Session) { x.State = session.StateSuccess },
		"running with end": func(x *session.Session) { x.End = base.Add(time.Hour) },
		"end before start": func(x *session.Session) { x.State = session.StateFailed; x.End = base.Add(-time.Hour) },
		"negative bytes":   func(x *session.Session) { x.Counters.Bytes = -5 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			next := cur
			mutate(&next)
			require.ErrorIs(t, st.Update(ctx, next), session.ErrInvalid)
		})
	}
	got, err := st.Get(ctx, cur.ID)
	require.NoError(t, err)
	assert.Equal(t, cur, got)
}

func (s suite) log(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	cur := reach(t, st, "job", session.StateWorking)
	sev := []session.Severity{session.SeverityInfo, session.SeverityWarning, session.SeverityError}
	for i := 1; i <= 25; i++ {
		e, err := st.Append(ctx, cur.ID, session.Entry{
			Time: base.Add(time.Duration(i) * time.Second), Severity: sev[i%3],
			Message: fmt.Sprintf("entry %d: ünïcode ✓", i),
		})
		require.NoError(t, err)
		assert.Equal(t, int64(i), e.Seq)
	}
	_, err := st.Append(ctx, cur.ID, session.Entry{Time: base, Severity: "loud", Message: "x"})
	require.ErrorIs(t, err, session.ErrInvalid)
	_, err = st.Append(ctx, cur.ID, session.Entry{Severity: session.SeverityInfo, Message: "no time"})
	require.ErrorIs(t, err, session.ErrInvalid)

	page, err := st.Log(ctx, cur.ID, 0, 10)
	require.NoError(t, err)
	require.Len(t, page, 10)
	assert.Equal(t, int64(1), page[0].Seq)
	assert.Equal(t, "entry 1: ünïcode ✓", page[0].Message)
	assert.Equal(t, session.SeverityWarning, page[0].Severity)
	assert.True(t, page[0].Time.Equal(base.Add(time.Second).Truncate(time.Microsecond)))
	page, err = st.Log(ctx, cur.ID, 20, 10)
	require.NoError(t, err)
	require.Len(t, page, 5)
	assert.Equal(t, int64(21), page[0].Seq)
	assert.Equal(t, int64(25), page[4].Seq)
	page, err = st.Log(ctx, cur.ID, 25, 10)
	require.NoError(t, err)
	assert.Empty(t, page)

	// An ended session still takes late entries.
	cur.State = session.StateSuccess
	cur.End = base.Add(time.Hour)
	require.NoError(t, st.Update(ctx, cur))
	e, err := st.Append(ctx, cur.ID, session.Entry{Time: base.Add(time.Hour), Severity: session.SeverityInfo, Message: "late"})
	require.NoError(t, err)
	assert.Equal(t, int64(26), e.Seq)
}

// appendConcurrently has Writers goroutines append n entries each to id,
// alternating between the stores given, and checks nothing was lost.
func appendConcurrently(t *testing.T, stores []session.Store, id string, n int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, Writers)
	for w := 0; w < Writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			st := stores[w%len(stores)]
			for i := 0; i < n; i++ {
				msg := fmt.Sprintf("writer %d entry %d", w, i)
				if _, err := st.Append(ctx, id, session.Entry{Time: base, Severity: session.SeverityInfo, Message: msg}); err != nil {
					errs <- fmt.Errorf("%s: %w", msg, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	var all []session.Entry
	for after := int64(0); ; {
		page, err := stores[0].Log(ctx, id, after, 97)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
	require.Equal(t, Writers*n, len(all), "every appended entry is in the log")
	seen := make(map[string]bool, len(all))
	for i, e := range all {
		require.Equal(t, int64(i+1), e.Seq, "sequence numbers are dense and ordered")
		require.False(t, seen[e.Message], "entry %q appears twice", e.Message)
		seen[e.Message] = true
	}
	// Each writer's own entries keep their order.
	for w := 0; w < Writers; w++ {
		next := 0
		for _, e := range all {
			var ew, ei int
			if _, err := fmt.Sscanf(e.Message, "writer %d entry %d", &ew, &ei); err == nil && ew == w {
				require.Equal(t, next, ei, "writer %d's entries out of order", w)
				next++
			}
		}
		require.Equal(t, n, next)
	}
}

func (s suite) concurrentAppend(t *testing.T) {
	st := s.h.New(t)
	cur := reach(t, st, "job", session.StateWorking)
	appendConcurrently(t, []session.Store{st}, cur.ID, 50)
}

func (s suite) concurrentEnd(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	stores := []session.Store{st, s.h.Peer(t, st)}
	cur := reach(t, st, "job", session.StateWorking)
	var wg sync.WaitGroup
	results := make(chan error, Writers)
	for w := 0; w < Writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			next := cur
			next.State = []session.State{session.StateSuccess, session.StateFailed}[w%2]
			next.End = base.Add(time.Duration(w+1) * time.Minute)
			next.Result = fmt.Sprintf("ended by %d", w)
			results <- stores[w%2].Update(ctx, next)
		}(w)
	}
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		if err == nil {
			won++
			continue
		}
		require.ErrorIs(t, err, session.ErrInvalidTransition)
	}
	assert.Equal(t, 1, won, "exactly one concurrent update ends the session")
	got, err := st.Get(ctx, cur.ID)
	require.NoError(t, err)
	require.True(t, got.State.Final())
	var w int
	_, err = fmt.Sscanf(got.Result, "ended by %d", &w)
	require.NoError(t, err)
	assert.True(t, got.End.Equal(base.Add(time.Duration(w+1)*time.Minute).Truncate(time.Microsecond)),
		"state, end and result come from the same winning update")
}

func (s suite) listPaging(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	var want []session.Session
	for i := 0; i < 23; i++ {
		kind := session.KindChild
		switch i % 4 {
		case 0:
			kind = session.KindParent
		case 2:
			kind = session.KindRestore // restores, drills and exports
		}
		// Pairs share a start time so the id breaks ties.
		x, err := st.Create(ctx, session.Session{
			Job: "A", Kind: kind, State: session.StateWorking,
			Start: base.Add(time.Duration(i/2) * time.Hour),
		})
		require.NoError(t, err)
		want = append(want, x)
	}
	for i := 0; i < 4; i++ {
		_, err := st.Create(ctx, child("B", base.Add(time.Duration(i)*time.Minute)))
		require.NoError(t, err)
	}
	sort.Slice(want, func(i, j int) bool {
		a, b := want[i], want[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.After(b.Start)
		}
		return a.ID > b.ID
	})

	collect := func(q session.Query) []session.Session {
		var got []session.Session
		for pages := 0; ; pages++ {
			require.Less(t, pages, 100, "paging does not end")
			p, err := st.List(ctx, q)
			require.NoError(t, err)
			require.LessOrEqual(t, len(p.Sessions), session.PageSize(q.Limit))
			got = append(got, p.Sessions...)
			if p.Next == "" {
				return got
			}
			require.Len(t, p.Sessions, session.PageSize(q.Limit), "only the last page is short")
			q.Cursor = p.Next
		}
	}
	assert.Equal(t, want, collect(session.Query{Job: "A", Limit: 5}))
	assert.Equal(t, want, collect(session.Query{Job: "A"}))
	assert.Equal(t, want, collect(session.Query{Job: "A", Limit: 23}))

	for _, kind := range []session.Kind{session.KindParent, session.KindRestore} {
		var of []session.Session
		for _, x := range want {
			if x.Kind == kind {
				of = append(of, x)
			}
		}
		assert.Len(t, of, 6)
		assert.Equal(t, of, collect(session.Query{Job: "A", Kind: kind, Limit: 2}))
	}
	assert.Len(t, collect(session.Query{Job: "B", Limit: 3}), 4)

	p, err := st.List(ctx, session.Query{Job: "nobody"})
	require.NoError(t, err)
	assert.Empty(t, p.Sessions)
	assert.Empty(t, p.Next)
}

func (s suite) listInvalid(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	_, err := st.List(ctx, session.Query{})
	require.ErrorIs(t, err, session.ErrInvalid)
	_, err = st.List(ctx, session.Query{Job: "A", Kind: "cousin"})
	require.ErrorIs(t, err, session.ErrInvalid)
	for _, c := range []string{"!!!", "bm90LWEtY3Vyc29y", session.Cursor{}.String()[:2]} {
		_, err = st.List(ctx, session.Query{Job: "A", Cursor: c})
		require.ErrorIs(t, err, session.ErrInvalidCursor, "cursor %q", c)
	}
}

func (s suite) latest(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	_, err := session.Latest(ctx, st, "job", "")
	require.ErrorIs(t, err, session.ErrNotFound)
	p, err := st.Create(ctx, session.Session{Job: "job", Kind: session.KindParent, State: session.StateStarting, Start: base})
	require.NoError(t, err)
	c, err := st.Create(ctx, child("job", base.Add(time.Minute)))
	require.NoError(t, err)
	got, err := session.Latest(ctx, st, "job", "")
	require.NoError(t, err)
	assert.Equal(t, c.ID, got.ID)
	got, err = session.Latest(ctx, st, "job", session.KindParent)
	require.NoError(t, err)
	assert.Equal(t, p.ID, got.ID)
}

func (s suite) peer(t *testing.T) {
	ctx := context.Background()
	a := s.h.New(t)
	b := s.h.Peer(t, a)
	created, err := a.Create(ctx, child("job", base))
	require.NoError(t, err)
	got, err := b.Get(ctx, created.ID)
	require.NoError(t, err, "a session created by one store is seen by its peer")
	assert.Equal(t, created, got)
	_, err = b.Create(ctx, created)
	require.ErrorIs(t, err, session.ErrExists)

	got.State = session.StateWorking
	require.NoError(t, b.Update(ctx, got))
	seen, err := a.Get(ctx, created.ID)
	require.NoError(t, err)
	assert.Equal(t, session.StateWorking, seen.State)

	appendConcurrently(t, []session.Store{a, b}, created.ID, 25)
}

func (s suite) canceledContext(t *testing.T) {
	st := s.h.New(t)
	cur := reach(t, st, "job", session.StateWorking)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := st.Get(ctx, cur.ID)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled), "want context.Canceled, got %v", err)
	next := cur
	next.State = session.StateFailed
	next.End = base.Add(time.Hour)
	require.Error(t, st.Update(ctx, next))
	got, err := st.Get(context.Background(), cur.ID)
	require.NoError(t, err)
	assert.Equal(t, session.StateWorking, got.State, "an update under a canceled context does not land")
}
