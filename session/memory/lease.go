package memory

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pglogship/pglogship/session"
)

var _ session.Leaser = (*Store)(nil)

// Fenced implements session.Fencer.
func (m *Store) Fenced(l session.Lease) session.Store { return fenced{m, l} }

// fenced is a Store whose writes hold only while l is its job's lease.
// Reads go to the store itself.
type fenced struct {
	*Store
	l session.Lease
}

func (f fenced) Create(ctx context.Context, s session.Session) (session.Session, error) {
	return f.create(ctx, s, &f.l)
}

func (f fenced) Update(ctx context.Context, s session.Session) error { return f.update(ctx, s, &f.l) }

func (f fenced) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	return f.append(ctx, id, e, &f.l)
}

// holds checks, with m.mu held, that fence (nil: none) is still its job's
// lease.
func (m *Store) holds(fence *session.Lease) error {
	if fence == nil {
		return nil
	}
	if err := session.ValidateLease(*fence); err != nil {
		return err
	}
	if r, ok := m.leases[fence.Job]; !ok || r.holder != fence.Holder || r.token != fence.Token {
		return fmt.Errorf("job %q, holder %q, token %d: %w", fence.Job, fence.Holder, fence.Token, session.ErrFenced)
	}
	return nil
}

// leaseRow is a job's lease; holder "" when released.
type leaseRow struct {
	holder string
	token  int64
	until  time.Time
}

// AcquireLease implements session.Leaser.
func (m *Store) AcquireLease(ctx context.Context, job, holder string, now time.Time, ttl time.Duration) (session.Lease, bool, error) {
	if err := ctx.Err(); err != nil {
		return session.Lease{}, false, err
	}
	if err := session.ValidateLeaseRequest(job, holder, now, ttl); err != nil {
		return session.Lease{}, false, err
	}
	now = session.Normalize(now)
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.leases[job]
	switch {
	case !ok:
		r = &leaseRow{}
		m.leases[job] = r
	case r.holder == holder:
	case r.holder != "" && now.Before(r.until):
		return session.Lease{Job: job, Holder: r.holder, Token: r.token, Until: r.until}, false, nil
	}
	if r.holder != holder {
		r.holder, r.token = holder, r.token+1
	}
	r.until = session.Normalize(now.Add(ttl))
	return session.Lease{Job: job, Holder: holder, Token: r.token, Until: r.until}, true, nil
}

// RenewLease implements session.Leaser.
func (m *Store) RenewLease(ctx context.Context, l session.Lease, now time.Time, ttl time.Duration) (session.Lease, error) {
	if err := ctx.Err(); err != nil {
		return session.Lease{}, err
	}
	if err := session.ValidateLeaseRequest(l.Job, l.Holder, now, ttl); err != nil {
		return session.Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.leases[l.Job]
	if !ok || r.holder != l.Holder || r.token != l.Token {
		return session.Lease{}, fmt.Errorf("renew lease of job %q: %w", l.Job, session.ErrLeaseLost)
	}
	r.until = session.Normalize(now.Add(ttl))
	l.Until = r.until
	return l, nil
}

// ReleaseLease implements session.Leaser.
func (m *Store) ReleaseLease(ctx context.Context, l session.Lease) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := session.ValidateLease(l); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.leases[l.Job]; ok && r.holder == l.Holder && r.token == l.Token {
		r.holder = ""
	}
	return nil
}

// SetJobEnabled implements session.Leaser.
func (m *Store) SetJobEnabled(ctx context.Context, job string, enabled bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := session.ValidateJobName(job); err != nil {
		return err
	}
	m.mu.Lock()
	m.enabled[job] = enabled
	m.mu.Unlock()
	return nil
}

// JobEnabled implements session.Leaser.
func (m *Store) JobEnabled(ctx context.Context, job string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := session.ValidateJobName(job); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled[job], nil
}

var _ session.LeaseBatcher = (*Store)(nil)

// JobStates implements session.LeaseBatcher.
func (m *Store) JobStates(ctx context.Context, jobs []string) ([]session.JobState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := session.ValidateBatch(jobs); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]session.JobState, len(jobs))
	for i, j := range jobs {
		out[i] = session.JobState{Job: j, Enabled: m.enabled[j], Lease: session.Lease{Job: j}}
		if r, ok := m.leases[j]; ok {
			out[i].Lease = session.Lease{Job: j, Holder: r.holder, Token: r.token, Until: r.until}
		}
	}
	return out, nil
}

// RenewLeases implements session.LeaseBatcher.
func (m *Store) RenewLeases(ctx context.Context, ls []session.Lease, now time.Time, ttl time.Duration) ([]session.Lease, []bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if len(ls) > session.MaxBatch {
		return nil, nil, session.ValidateBatch(make([]string, len(ls)))
	}
	for _, l := range ls {
		if err := session.ValidateLeaseRequest(l.Job, l.Holder, now, ttl); err != nil {
			return nil, nil, err
		}
	}
	until := session.Normalize(now.Add(ttl))
	m.mu.Lock()
	defer m.mu.Unlock()
	renewed, lost := make([]session.Lease, len(ls)), make([]bool, len(ls))
	for i, l := range ls {
		r, ok := m.leases[l.Job]
		if !ok || r.holder != l.Holder || r.token != l.Token {
			lost[i] = true
			continue
		}
		r.until = until
		l.Until = until
		renewed[i] = l
	}
	return renewed, lost, nil
}

var _ session.Roster = (*Store)(nil)

// Announce implements session.Roster.
func (m *Store) Announce(ctx context.Context, holder string, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := session.ValidateAnnouncement(holder, until, true); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roster[holder] = session.Normalize(until)
	return nil
}

// Present implements session.Roster.
func (m *Store) Present(ctx context.Context, now time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if now.IsZero() {
		return nil, fmt.Errorf("%w: who is present needs the current time", session.ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for h, until := range m.roster {
		if now.Before(until) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out[:min(len(out), session.MaxBatch)], nil
}

// Withdraw implements session.Roster.
func (m *Store) Withdraw(ctx context.Context, holder string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := session.ValidateAnnouncement(holder, time.Time{}, false); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.roster, holder)
	return nil
}
