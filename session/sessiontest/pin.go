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
	"github.com/pglogship/pglogship/wal"
)

// runPins runs the session.Pinner cases as subtests of t; a store that
// does not implement it skips them (the interface is optional).
func (s suite) runPins(t *testing.T) {
	if _, ok := s.h.New(t).(session.Pinner); !ok {
		t.Skip("the store does not implement session.Pinner")
	}
	t.Run("RoundTrip", s.pinRoundTrip)
	t.Run("RenewAndRunOut", s.pinRenewRunOut)
	t.Run("Unpin", s.pinUnpin)
	t.Run("Concurrent", s.pinConcurrent)
	t.Run("Invalid", s.pinInvalid)
	t.Run("CanceledContext", s.pinCanceledContext)
}

// pinners returns a fresh store and a peer on the same data, as Pinners.
func (s suite) pinners(t *testing.T) (a, b session.Pinner) {
	t.Helper()
	st := s.h.New(t)
	return st.(session.Pinner), s.h.Peer(t, st).(session.Pinner)
}

func restorePin(job, id string, until time.Time) session.Pin {
	return session.Pin{Job: job, ID: id, Purpose: "restore", Machine: "db1", SystemID: 1<<63 + 42,
		RestorePoints: []string{"20261125T220000Z-0a1b2c3d", "20261126T220000Z-4e5f6a7b"},
		Timeline:      2, StartLSN: wal.LSN(0x1_6000028), Until: until}
}

func pins(t *testing.T, p session.Pinner, job string, now time.Time) []session.Pin {
	t.Helper()
	got, err := p.Pins(context.Background(), job, now)
	require.NoError(t, err)
	require.NotNil(t, got, "no pins is an empty result")
	return got
}

// Every field comes back as given (Until normalized), in ID order, from
// the peer too; pins of another job are apart.
func (s suite) pinRoundTrip(t *testing.T) {
	ctx := context.Background()
	a, b := s.pinners(t)
	assert.Empty(t, pins(t, a, "job", base))
	until := base.Add(10 * time.Minute)
	p2, p1 := restorePin("job", "pin-2", until), restorePin("job", "pin-1", until)
	p1.Purpose, p1.RestorePoints, p1.Timeline = "drill", []string{"20261125T220000Z-0a1b2c3d"}, 1
	require.NoError(t, a.Pin(ctx, p2, base))
	require.NoError(t, a.Pin(ctx, p1, base))
	require.NoError(t, a.Pin(ctx, restorePin("other job", "pin-3", until), base))
	want := func(p session.Pin) session.Pin { p.Until = session.Normalize(p.Until); return p }
	for name, st := range map[string]session.Pinner{"store": a, "peer": b} {
		got := pins(t, st, "job", base)
		require.Len(t, got, 2, name)
		assert.Equal(t, []session.Pin{want(p1), want(p2)}, got, name)
		assert.Equal(t, time.UTC, got[0].Until.Location(), name)
	}
	assert.Len(t, pins(t, b, "other job", base), 1)
}

// A pin is in force until its Until; pinned again with a later one it
// lasts longer, and a pin that ran out is not returned.
func (s suite) pinRenewRunOut(t *testing.T) {
	ctx := context.Background()
	a, b := s.pinners(t)
	require.NoError(t, a.Pin(ctx, restorePin("job", "crashed", base.Add(ttl)), base))
	require.NoError(t, a.Pin(ctx, restorePin("job", "running", base.Add(ttl)), base))
	later := base.Add(ttl - time.Second)
	require.NoError(t, b.Pin(ctx, restorePin("job", "running", later.Add(ttl)), later))
	got := pins(t, a, "job", later)
	require.Len(t, got, 2, "both in force before they run out")
	at := base.Add(ttl)
	got = pins(t, a, "job", at)
	require.Len(t, got, 1, "the unrenewed one ran out at its Until")
	assert.Equal(t, "running", got[0].ID)
	assert.True(t, got[0].Until.Equal(session.Normalize(later.Add(ttl))))
	// Pinned again after it ran out, it is in force again.
	require.NoError(t, b.Pin(ctx, restorePin("job", "crashed", at.Add(ttl)), at))
	assert.Len(t, pins(t, a, "job", at), 2)
	assert.Empty(t, pins(t, a, "job", at.Add(2*ttl)))
}

func (s suite) pinUnpin(t *testing.T) {
	ctx := context.Background()
	a, b := s.pinners(t)
	require.NoError(t, a.Pin(ctx, restorePin("job", "p1", base.Add(ttl)), base))
	require.NoError(t, a.Pin(ctx, restorePin("job", "p2", base.Add(ttl)), base))
	require.NoError(t, a.Pin(ctx, restorePin("job 2", "p1", base.Add(ttl)), base))
	require.NoError(t, b.Unpin(ctx, "job", "p1"))
	require.NoError(t, b.Unpin(ctx, "job", "p1"), "idempotent")
	require.NoError(t, b.Unpin(ctx, "job", "never pinned"))
	got := pins(t, a, "job", base)
	require.Len(t, got, 1)
	assert.Equal(t, "p2", got[0].ID)
	assert.Len(t, pins(t, a, "job 2", base), 1, "another job's pin of that id stays")
}

// Pins of many restores at once, on both store values, all land.
func (s suite) pinConcurrent(t *testing.T) {
	ctx := context.Background()
	a, b := s.pinners(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2*Writers)
	for i := 0; i < 2*Writers; i++ {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- st.Pin(ctx, restorePin("job", fmt.Sprintf("pin-%02d", i), base.Add(ttl)), base)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got := pins(t, b, "job", base)
	require.Len(t, got, 2*Writers)
	for i, p := range got {
		assert.Equal(t, fmt.Sprintf("pin-%02d", i), p.ID)
	}
}

func (s suite) pinInvalid(t *testing.T) {
	ctx := context.Background()
	a, _ := s.pinners(t)
	long := string(make([]byte, session.MaxNameLen+1))
	ok := restorePin("job", "p", base.Add(ttl))
	with := func(edit func(*session.Pin)) session.Pin { p := ok; edit(&p); return p }
	for name, call := range map[string]func() error{
		"no job":       func() error { return a.Pin(ctx, with(func(p *session.Pin) { p.Job = "" }), base) },
		"no id":        func() error { return a.Pin(ctx, with(func(p *session.Pin) { p.ID = "" }), base) },
		"long id":      func() error { return a.Pin(ctx, with(func(p *session.Pin) { p.ID = long }), base) },
		"long machine": func() error { return a.Pin(ctx, with(func(p *session.Pin) { p.Machine = long }), base) },
		"empty restore point": func() error {
			return a.Pin(ctx, with(func(p *session.Pin) { p.RestorePoints = []string{""} }), base)
		},
		"run out":        func() error { return a.Pin(ctx, ok, base.Add(ttl)) },
		"no until":       func() error { return a.Pin(ctx, with(func(p *session.Pin) { p.Until = time.Time{} }), base) },
		"no now":         func() error { return a.Pin(ctx, ok, time.Time{}) },
		"unpin no job":   func() error { return a.Unpin(ctx, "", "p") },
		"unpin no id":    func() error { return a.Unpin(ctx, "job", "") },
		"pins no job":    func() error { _, err := a.Pins(ctx, "", base); return err },
		"pins no time":   func() error { _, err := a.Pins(ctx, "job", time.Time{}); return err },
		"pins long job":  func() error { _, err := a.Pins(ctx, long, base); return err },
		"unpin long job": func() error { return a.Unpin(ctx, long, "p") },
	} {
		require.ErrorIs(t, call(), session.ErrInvalid, name)
	}
	assert.Empty(t, pins(t, a, "job", base), "refused calls pinned nothing")
}

func (s suite) pinCanceledContext(t *testing.T) {
	a, _ := s.pinners(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := a.Pin(ctx, restorePin("job", "p", base.Add(ttl)), base)
	require.True(t, errors.Is(err, context.Canceled), "want context.Canceled, got %v", err)
	assert.Empty(t, pins(t, a, "job", base), "the canceled pin did not land")
	require.NoError(t, a.Pin(context.Background(), restorePin("job", "p", base.Add(ttl)), base))
	require.Error(t, a.Unpin(ctx, "job", "p"))
	_, err = a.Pins(ctx, "job", base)
	require.Error(t, err)
	assert.Len(t, pins(t, a, "job", base), 1, "the canceled unpin removed nothing")
}
