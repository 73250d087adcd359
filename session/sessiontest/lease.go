package sessiontest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/session"
)

// runLeases runs the session.Leaser cases as subtests of t; a store that
// does not implement it skips them (the interface is optional).
func (s suite) runLeases(t *testing.T) {
	if _, ok := s.h.New(t).(session.Leaser); !ok {
		t.Skip("the store does not implement session.Leaser")
	}
	t.Run("AcquireRenewRelease", s.leaseBasics)
	t.Run("ExclusiveUnderConcurrency", s.leaseExclusive)
	t.Run("ExpiryAndTakeover", s.leaseTakeover)
	t.Run("RenewAfterLoss", s.leaseRenewAfterLoss)
	t.Run("ReleaseThenAcquire", s.leaseRelease)
	t.Run("TokenGrows", s.leaseTokenGrows)
	t.Run("Invalid", s.leaseInvalid)
	t.Run("JobEnabledShared", s.jobEnabledShared)
	t.Run("CanceledContext", s.leaseCanceledContext)
	t.Run("FencedWrites", s.fencedWrites)
	t.Run("FencedWritesRaceATakeover", s.fencedRace)
	t.Run("Batch", s.leaseBatch)
	t.Run("Roster", s.roster)
}

// Announcements are seen by both store values until they run out at the
// reader's now; an announcement again moves its end either way; Withdraw
// removes one at once and is idempotent; bad input is refused. A store
// that does not implement session.Roster skips it (optional).
func (s suite) roster(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	a, ok := st.(session.Roster)
	if !ok {
		t.Skip("the store does not implement session.Roster")
	}
	b := s.h.Peer(t, st).(session.Roster)
	present := func(r session.Roster, now time.Time) []string {
		t.Helper()
		got, err := r.Present(ctx, now)
		require.NoError(t, err)
		return got
	}
	assert.Empty(t, present(a, base), "nobody announced")
	require.NoError(t, a.Announce(ctx, "host-b", base.Add(ttl)))
	require.NoError(t, b.Announce(ctx, "host-a", base.Add(2*ttl)))
	require.NoError(t, b.Announce(ctx, "host-c", base.Add(ttl/2)))
	assert.Equal(t, []string{"host-a", "host-b", "host-c"}, present(a, base), "sorted, from both store values")
	assert.Equal(t, []string{"host-a", "host-b"}, present(b, base.Add(ttl/2)), "run out at its end")
	assert.Equal(t, []string{"host-a"}, present(a, base.Add(ttl)))

	require.NoError(t, a.Announce(ctx, "host-a", base.Add(ttl/4)))
	assert.Equal(t, []string{"host-b"}, present(b, base.Add(ttl/2)), "an announcement again replaces the end, also an earlier one")
	require.NoError(t, b.Announce(ctx, "host-c", base.Add(3*ttl)))
	assert.Equal(t, []string{"host-c"}, present(a, base.Add(2*ttl)), "announced again after it ran out")

	require.NoError(t, a.Withdraw(ctx, "host-b"))
	require.NoError(t, b.Withdraw(ctx, "host-b"), "idempotent")
	require.NoError(t, b.Withdraw(ctx, "never announced"))
	assert.Equal(t, []string{"host-a", "host-c"}, present(b, base))

	require.ErrorIs(t, a.Announce(ctx, "", base), session.ErrInvalid)
	require.ErrorIs(t, a.Announce(ctx, string(make([]byte, session.MaxNameLen+1)), base), session.ErrInvalid)
	require.ErrorIs(t, a.Announce(ctx, "host-a", time.Time{}), session.ErrInvalid)
	_, err := a.Present(ctx, time.Time{})
	require.ErrorIs(t, err, session.ErrInvalid)
	require.ErrorIs(t, a.Withdraw(ctx, ""), session.ErrInvalid)
}

// JobStates reads what JobEnabled and the lease calls say of each job, in
// the order asked, also jobs never seen; RenewLeases renews each lease
// still its holder's (also one that ran out, taken by no one) and reports
// the others lost, changing nothing of them; both refuse a call over
// MaxBatch. A store that does not implement session.LeaseBatcher skips
// it (optional).
func (s suite) leaseBatch(t *testing.T) {
	ctx := context.Background()
	st := s.h.New(t)
	bt, ok := st.(session.LeaseBatcher)
	if !ok {
		t.Skip("the store does not implement session.LeaseBatcher")
	}
	a := st.(session.Leaser)
	b := s.h.Peer(t, st).(session.Leaser)
	require.NoError(t, a.SetJobEnabled(ctx, "on", true))
	require.NoError(t, a.SetJobEnabled(ctx, "off", false))
	lOn := acquire(t, a, "on", "host-a", base, true)
	lOff := acquire(t, a, "off", "host-a", base, true)
	lTaken := acquire(t, a, "taken", "host-a", base, true)
	lGone := acquire(t, a, "gone", "host-a", base, true)
	later := lOn.Until.Add(time.Second) // every lease ran out
	acquire(t, b, "taken", "host-b", later, true)
	require.NoError(t, a.ReleaseLease(ctx, lGone))

	states, err := bt.JobStates(ctx, []string{"taken", "never", "on", "off", "gone"})
	require.NoError(t, err)
	require.Len(t, states, 5)
	for i, want := range []session.JobState{
		{Job: "taken", Lease: session.Lease{Job: "taken", Holder: "host-b", Token: lTaken.Token + 1, Until: later.Add(ttl)}},
		{Job: "never", Lease: session.Lease{Job: "never"}},
		{Job: "on", Enabled: true, Lease: lOn},
		{Job: "off", Lease: lOff},
		{Job: "gone", Lease: session.Lease{Job: "gone", Token: lGone.Token, Until: lGone.Until}},
	} {
		got := states[i]
		assert.Equal(t, want.Job, got.Job, "in the order asked")
		assert.Equal(t, want.Enabled, got.Enabled, want.Job)
		assert.Equal(t, want.Lease.Holder, got.Lease.Holder, want.Job)
		assert.Equal(t, want.Lease.Token, got.Lease.Token, want.Job)
		if want.Lease.Holder != "" {
			assert.True(t, want.Lease.Until.Equal(got.Lease.Until), "%s: until %v, want %v", want.Job, got.Lease.Until, want.Lease.Until)
		}
	}

	renewed, lost, err := bt.RenewLeases(ctx, []session.Lease{lOn, lTaken, lOff, lGone}, later, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []bool{false, true, false, true}, lost)
	assert.True(t, renewed[0].Until.Equal(later.Add(time.Hour)), "ran out, taken by no one: still the holder's")
	assert.Equal(t, lOn.Token, renewed[0].Token)
	assert.True(t, renewed[2].Until.Equal(later.Add(time.Hour)))
	_, err = a.RenewLease(ctx, lTaken, later, time.Minute)
	require.ErrorIs(t, err, session.ErrLeaseLost, "the lost one was not renewed")
	states, err = bt.JobStates(ctx, []string{"taken", "on"})
	require.NoError(t, err)
	assert.Equal(t, "host-b", states[0].Lease.Holder, "a lost lease is left as it is")
	assert.True(t, states[1].Lease.Until.Equal(later.Add(time.Hour)))

	_, err = bt.JobStates(ctx, make([]string, session.MaxBatch+1))
	require.ErrorIs(t, err, session.ErrInvalid)
	_, err = bt.JobStates(ctx, []string{""})
	require.ErrorIs(t, err, session.ErrInvalid)
	_, _, err = bt.RenewLeases(ctx, make([]session.Lease, session.MaxBatch+1), later, time.Minute)
	require.ErrorIs(t, err, session.ErrInvalid)
	_, _, err = bt.RenewLeases(ctx, []session.Lease{{Job: "on"}}, later, time.Minute)
	require.ErrorIs(t, err, session.ErrInvalid)
}

// fencers returns a fresh store and a peer on the same data, as Fencers;
// a store that does not implement it skips the test (optional).
func (s suite) fencers(t *testing.T) (a, b session.Fencer) {
	t.Helper()
	st := s.h.New(t)
	fa, ok := st.(session.Fencer)
	if !ok {
		t.Skip("the store does not implement session.Fencer")
	}
	return fa, s.h.Peer(t, st).(session.Fencer)
}

// A holder's fenced writes land while the lease is its own (also once it
// ran out, taken by no one); after another holder took the lease over,
// or after it was released, each write is refused with ErrFenced and
// changes nothing, while the new holder's land. Reads stay open.
func (s suite) fencedWrites(t *testing.T) {
	ctx := context.Background()
	a, b := s.fencers(t)
	la := acquire(t, a.(session.Leaser), "job", "host-a", base, true)
	fa := a.Fenced(la)
	x, err := fa.Create(ctx, child("job", base))
	require.NoError(t, err)
	x.State = session.StateWorking
	require.NoError(t, fa.Update(ctx, x))
	_, err = fa.Append(ctx, x.ID, session.Entry{Time: base, Severity: session.SeverityInfo, Message: "mine"})
	require.NoError(t, err)
	x.Counters.Files = 1
	require.NoError(t, fa.Update(ctx, x), "a lease that ran out, taken by no one, still fences in")

	lb := acquire(t, b.(session.Leaser), "job", "host-b", la.Until.Add(time.Second), true)
	stale := x
	stale.Counters.Files = 99
	require.ErrorIs(t, fa.Update(ctx, stale), session.ErrFenced)
	require.ErrorIs(t, fa.Update(ctx, stale), session.ErrLeaseLost, "ErrFenced is a lost lease")
	_, err = fa.Append(ctx, x.ID, session.Entry{Time: base, Severity: session.SeverityInfo, Message: "stale"})
	require.ErrorIs(t, err, session.ErrFenced)
	_, err = fa.Create(ctx, child("job", base.Add(time.Hour)))
	require.ErrorIs(t, err, session.ErrFenced)

	got, err := fa.Get(ctx, x.ID)
	require.NoError(t, err, "reads are not fenced")
	assert.Equal(t, int64(1), got.Counters.Files, "the stale update changed nothing")
	log, err := b.(session.Store).Log(ctx, x.ID, 0, 0)
	require.NoError(t, err)
	require.Len(t, log, 1, "the stale entry was not appended")
	page, err := b.(session.Store).List(ctx, session.Query{Job: "job"})
	require.NoError(t, err)
	assert.Len(t, page.Sessions, 1, "the stale session was not created")

	fb := b.Fenced(lb)
	x.State, x.End, x.Result = session.StateSuccess, base.Add(time.Minute), "taken over"
	require.NoError(t, fb.Update(ctx, x), "the new holder writes")

	// Released: the fence falls too, also for the same holder later.
	require.NoError(t, b.(session.Leaser).ReleaseLease(ctx, lb))
	_, err = fb.Create(ctx, child("job", base.Add(2*time.Hour)))
	require.ErrorIs(t, err, session.ErrFenced)
	lb2 := acquire(t, b.(session.Leaser), "job", "host-b", lb.Until, true)
	_, err = fb.Create(ctx, child("job", base.Add(2*time.Hour)))
	require.ErrorIs(t, err, session.ErrFenced, "an old holding of the same holder stays fenced off")
	_, err = b.Fenced(lb2).Create(ctx, child("job", base.Add(2*time.Hour)))
	require.NoError(t, err)

	// Another job's lease fences nothing of this one's; a lease with no
	// holder is invalid.
	_, err = a.Fenced(session.Lease{Job: "other", Holder: "host-a", Token: la.Token}).Create(ctx, child("job", base.Add(3*time.Hour)))
	require.ErrorIs(t, err, session.ErrFenced)
	_, err = a.Fenced(session.Lease{Job: "job"}).Create(ctx, child("job", base.Add(3*time.Hour)))
	require.ErrorIs(t, err, session.ErrInvalid)
}

// Fenced writes from one store value race a takeover from another, round
// after round: every write either landed before the takeover (the new
// holder sees it as soon as it holds the lease) or was refused; none lands
// after.
func (s suite) fencedRace(t *testing.T) {
	ctx := context.Background()
	a, b := s.fencers(t)
	now := base
	for round := 0; round < 10; round++ {
		la := acquire(t, a.(session.Leaser), "job", "host-a", now, true)
		fa := a.Fenced(la)
		x, err := fa.Create(ctx, child("job", now))
		require.NoError(t, err)
		var wg sync.WaitGroup
		landed := make(chan int64, Writers)
		start := make(chan struct{})
		for w := 0; w < Writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				e, err := fa.Append(ctx, x.ID, session.Entry{Time: now, Severity: session.SeverityInfo, Message: "a"})
				if err != nil {
					assert.ErrorIs(t, err, session.ErrFenced)
					return
				}
				landed <- e.Seq
			}()
		}
		var lb session.Lease
		var seen []session.Entry // the log as the new holder finds it
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			lb = acquire(t, b.(session.Leaser), "job", "host-b", la.Until, true)
			var err error
			seen, err = b.(session.Store).Log(ctx, x.ID, 0, 0)
			assert.NoError(t, err)
		}()
		close(start)
		wg.Wait()
		close(landed)
		n := 0
		for range landed {
			n++
		}
		// What the new holder found when it took over is final.
		log, err := b.(session.Store).Log(ctx, x.ID, 0, 0)
		require.NoError(t, err)
		require.Len(t, log, n, "round %d: every write that landed is seen, none other", round)
		require.Equal(t, seen, log, "round %d: nothing landed after the takeover", round)
		_, err = fa.Append(ctx, x.ID, session.Entry{Time: now, Severity: session.SeverityInfo, Message: "late"})
		require.ErrorIs(t, err, session.ErrFenced)
		require.NoError(t, b.(session.Leaser).ReleaseLease(ctx, lb))
		now = lb.Until
	}
}

// leasers returns a fresh store and a peer on the same data, as Leasers.
func (s suite) leasers(t *testing.T) (a, b session.Leaser) {
	t.Helper()
	st := s.h.New(t)
	return st.(session.Leaser), s.h.Peer(t, st).(session.Leaser)
}

const ttl = 30 * time.Second

// acquire claims job for holder at now and requires the outcome ok.
func acquire(t *testing.T, l session.Leaser, job, holder string, now time.Time, ok bool) session.Lease {
	t.Helper()
	got, gotOK, err := l.AcquireLease(context.Background(), job, holder, now, ttl)
	require.NoError(t, err)
	require.Equal(t, ok, gotOK, "%s acquires %s at %v", holder, job, now)
	if ok {
		assert.Equal(t, job, got.Job)
		assert.Equal(t, holder, got.Holder)
		assert.True(t, got.Until.Equal(now.Add(ttl).Truncate(time.Microsecond)), "until %v, want now+ttl", got.Until)
		assert.Equal(t, time.UTC, got.Until.Location())
	}
	return got
}

func (s suite) leaseBasics(t *testing.T) {
	ctx := context.Background()
	a, _ := s.leasers(t)
	l := acquire(t, a, "job", "host-a", base, true)
	assert.Positive(t, l.Token)
	assert.True(t, l.Held(base))
	assert.False(t, l.Held(base.Add(ttl)))

	again := acquire(t, a, "job", "host-a", base.Add(time.Second), true)
	assert.Equal(t, l.Token, again.Token, "acquiring one's own lease again keeps the token")

	r, err := a.RenewLease(ctx, again, base.Add(10*time.Second), ttl)
	require.NoError(t, err)
	assert.Equal(t, l.Token, r.Token)
	assert.True(t, r.Until.Equal(base.Add(10*time.Second+ttl).Truncate(time.Microsecond)))
	r2, err := a.RenewLease(ctx, r, base.Add(10*time.Second), ttl)
	require.NoError(t, err, "renewing twice is harmless")
	assert.Equal(t, r, r2)

	// Leases of other jobs are independent.
	other := acquire(t, a, "other job", "host-b", base, true)
	assert.Equal(t, "host-b", other.Holder)

	require.NoError(t, a.ReleaseLease(ctx, r))
	require.NoError(t, a.ReleaseLease(ctx, r), "releasing twice is harmless")
}

// Writers new holders race for one job from two store values at the same
// moment, round after round, each round just as the last winner's lease
// runs out. Exactly one gets it each round, with a greater token.
func (s suite) leaseExclusive(t *testing.T) {
	ctx := context.Background()
	a, b := s.leasers(t)
	stores := []session.Leaser{a, b}
	var lastToken int64
	for round := 0; round < 20; round++ {
		now := base.Add(time.Duration(round) * ttl) // the previous winner's lease ends now
		var wg sync.WaitGroup
		type result struct {
			l   session.Lease
			ok  bool
			err error
		}
		results := make(chan result, Writers)
		start := make(chan struct{})
		for w := 0; w < Writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				<-start
				l, ok, err := stores[w%2].AcquireLease(ctx, "job", fmt.Sprintf("host-%d-%d", round, w), now, ttl)
				results <- result{l, ok, err}
			}(w)
		}
		close(start)
		wg.Wait()
		close(results)
		var winners []session.Lease
		for r := range results {
			require.NoError(t, r.err)
			if r.ok {
				winners = append(winners, r.l)
			}
		}
		require.Len(t, winners, 1, "round %d: exactly one holder gets the lease", round)
		require.Greater(t, winners[0].Token, lastToken, "round %d: a new holder gets a greater token", round)
		lastToken = winners[0].Token
		// Everyone now sees the winner.
		for i, st := range stores {
			l, ok, err := st.AcquireLease(ctx, "job", "host-late", now.Add(time.Second), ttl)
			require.NoError(t, err)
			require.False(t, ok)
			assert.Equal(t, winners[0].Holder, l.Holder, "store %d names the holder", i)
			assert.Equal(t, winners[0].Token, l.Token)
			assert.True(t, l.Until.Equal(winners[0].Until))
		}
	}
}

func (s suite) leaseTakeover(t *testing.T) {
	ctx := context.Background()
	a, b := s.leasers(t)
	la := acquire(t, a, "job", "host-a", base, true)
	seen := acquire(t, b, "job", "host-b", base.Add(ttl-time.Microsecond), false)
	assert.Equal(t, "host-a", seen.Holder, "a refused acquire tells who holds the lease")
	assert.True(t, seen.Until.Equal(la.Until), "and until when")

	// A renewed lease runs on.
	la, err := a.RenewLease(ctx, la, base.Add(20*time.Second), ttl)
	require.NoError(t, err)
	acquire(t, b, "job", "host-b", base.Add(ttl), false)

	// Not renewed, it runs out: another holder takes it at its end.
	lb := acquire(t, b, "job", "host-b", la.Until, true)
	assert.Greater(t, lb.Token, la.Token, "a takeover grows the token")
	acquire(t, a, "job", "host-a", la.Until.Add(time.Second), false)

	// An expired lease nobody took is still its holder's: renewing it works.
	lb2, err := b.RenewLease(ctx, lb, lb.Until.Add(time.Hour), ttl)
	require.NoError(t, err)
	assert.Equal(t, lb.Token, lb2.Token)
	// As does acquiring it again, with the same token.
	lb3 := acquire(t, b, "job", "host-b", lb2.Until.Add(time.Hour), true)
	assert.Equal(t, lb.Token, lb3.Token)
}

func (s suite) leaseRenewAfterLoss(t *testing.T) {
	ctx := context.Background()
	a, b := s.leasers(t)
	la := acquire(t, a, "job", "host-a", base, true)
	lb := acquire(t, b, "job", "host-b", la.Until.Add(time.Second), true)
	_, err := a.RenewLease(ctx, la, la.Until.Add(2*time.Second), ttl)
	require.ErrorIs(t, err, session.ErrLeaseLost, "renewing a lease taken over")
	// The loser's renew and release change nothing for the new holder.
	require.NoError(t, a.ReleaseLease(ctx, la))
	got := acquire(t, a, "job", "host-a", la.Until.Add(3*time.Second), false)
	assert.Equal(t, lb.Holder, got.Holder)
	assert.Equal(t, lb.Token, got.Token)
	assert.True(t, got.Until.Equal(lb.Until))

	// A lease never acquired cannot be renewed either.
	_, err = b.RenewLease(ctx, session.Lease{Job: "never", Holder: "host-b", Token: 1}, base, ttl)
	require.ErrorIs(t, err, session.ErrLeaseLost)
}

func (s suite) leaseRelease(t *testing.T) {
	ctx := context.Background()
	a, b := s.leasers(t)
	la := acquire(t, a, "job", "host-a", base, true)
	require.NoError(t, a.ReleaseLease(ctx, la))
	lb := acquire(t, b, "job", "host-b", base.Add(time.Second), true)
	assert.Greater(t, lb.Token, la.Token)
	_, err := a.RenewLease(ctx, la, base.Add(2*time.Second), ttl)
	require.ErrorIs(t, err, session.ErrLeaseLost, "renewing a released lease")

	// Released and taken back by the same holder: a new token, and the
	// old lease stays lost.
	require.NoError(t, b.ReleaseLease(ctx, lb))
	lb2 := acquire(t, b, "job", "host-b", base.Add(3*time.Second), true)
	assert.Greater(t, lb2.Token, lb.Token, "a lease taken again after its release is a new holding")
	_, err = b.RenewLease(ctx, lb, base.Add(4*time.Second), ttl)
	require.ErrorIs(t, err, session.ErrLeaseLost)
	_, err = a.RenewLease(ctx, lb2, base.Add(4*time.Second), ttl)
	require.NoError(t, err, "the lease is the database's, not the store value's")
}

func (s suite) leaseTokenGrows(t *testing.T) {
	a, b := s.leasers(t)
	var last int64
	now := base
	for i := 0; i < 6; i++ {
		st, holder := a, "host-a"
		if i%2 == 1 {
			st, holder = b, "host-b"
		}
		l := acquire(t, st, "job", holder, now, true)
		require.Greater(t, l.Token, last, "holding %d", i)
		last = l.Token
		now = l.Until
	}
	other := acquire(t, a, "other job", "host-a", now, true)
	assert.Positive(t, other.Token)
}

func (s suite) leaseInvalid(t *testing.T) {
	ctx := context.Background()
	a, _ := s.leasers(t)
	long := string(make([]byte, session.MaxNameLen+1))
	for name, call := range map[string]func() error{
		"no job":       func() error { _, _, err := a.AcquireLease(ctx, "", "h", base, ttl); return err },
		"long job":     func() error { _, _, err := a.AcquireLease(ctx, long, "h", base, ttl); return err },
		"no holder":    func() error { _, _, err := a.AcquireLease(ctx, "job", "", base, ttl); return err },
		"zero ttl":     func() error { _, _, err := a.AcquireLease(ctx, "job", "h", base, 0); return err },
		"no time":      func() error { _, _, err := a.AcquireLease(ctx, "job", "h", time.Time{}, ttl); return err },
		"renew no job": func() error { _, err := a.RenewLease(ctx, session.Lease{Holder: "h"}, base, ttl); return err },
		"renew ttl": func() error {
			_, err := a.RenewLease(ctx, session.Lease{Job: "j", Holder: "h"}, base, -ttl)
			return err
		},
		"release":     func() error { return a.ReleaseLease(ctx, session.Lease{Job: "j"}) },
		"set enabled": func() error { return a.SetJobEnabled(ctx, "", true) },
		"enabled":     func() error { _, err := a.JobEnabled(ctx, long); return err },
	} {
		require.ErrorIs(t, call(), session.ErrInvalid, name)
	}
	_, ok, err := a.AcquireLease(ctx, "job", "h", base, ttl)
	require.NoError(t, err)
	assert.True(t, ok, "refused calls took nothing")
}

func (s suite) jobEnabledShared(t *testing.T) {
	ctx := context.Background()
	a, b := s.leasers(t)
	on, err := b.JobEnabled(ctx, "job")
	require.NoError(t, err)
	assert.False(t, on, "a job never set is disabled")
	require.NoError(t, a.SetJobEnabled(ctx, "job", true))
	require.NoError(t, a.SetJobEnabled(ctx, "job", true), "idempotent")
	on, err = b.JobEnabled(ctx, "job")
	require.NoError(t, err)
	assert.True(t, on, "the peer sees the job enabled")
	on, err = b.JobEnabled(ctx, "other")
	require.NoError(t, err)
	assert.False(t, on, "per job")
	require.NoError(t, b.SetJobEnabled(ctx, "job", false))
	on, err = a.JobEnabled(ctx, "job")
	require.NoError(t, err)
	assert.False(t, on, "disabled by the peer")
}

func (s suite) leaseCanceledContext(t *testing.T) {
	a, _ := s.leasers(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := a.AcquireLease(ctx, "job", "host-a", base, ttl)
	require.True(t, errors.Is(err, context.Canceled), "want context.Canceled, got %v", err)
	require.Error(t, a.SetJobEnabled(ctx, "job", true))
	_, ok, err := a.AcquireLease(context.Background(), "job", "host-b", base, ttl)
	require.NoError(t, err)
	assert.True(t, ok, "the canceled acquire took nothing")
	on, err := a.JobEnabled(context.Background(), "job")
	require.NoError(t, err)
	assert.False(t, on, "the canceled write did not land")
}
