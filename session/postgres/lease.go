package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/session"
)

var _ session.Leaser = (*Store)(nil)

// Fenced implements session.Fencer: each write runs in a transaction that
// first reads the job's lease row FOR SHARE. A takeover updates that row,
// so it waits for a fenced write in flight to commit, and a write after
// it finds another holder or token and is refused.
func (s *Store) Fenced(l session.Lease) session.Store { return fenced{s, l} }

// Reads go to the store itself.
type fenced struct {
	*Store
	l session.Lease
}

func (f fenced) Create(ctx context.Context, x session.Session) (out session.Session, err error) {
	err = f.write(ctx, "create session "+x.ID, func(tx pgx.Tx) error {
		out, err = f.create(ctx, tx, x)
		return err
	})
	return out, err
}

func (f fenced) Update(ctx context.Context, x session.Session) error {
	return f.write(ctx, "update session "+x.ID, func(tx pgx.Tx) error { return f.update(ctx, tx, x) })
}

func (f fenced) Append(ctx context.Context, id string, e session.Entry) (out session.Entry, err error) {
	err = f.write(ctx, "append to session "+id, func(tx pgx.Tx) error {
		out, err = f.append(ctx, tx, id, e)
		return err
	})
	return out, err
}

// write runs fn in a transaction after checking the fence in it.
func (f fenced) write(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	if err := session.ValidateLease(f.l); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM `+f.table("leases")+` WHERE job = $1 AND holder = $2 AND token = $3 FOR SHARE`,
			f.l.Job, f.l.Holder, f.l.Token).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%s: job %q, holder %q, token %d: %w", what, f.l.Job, f.l.Holder, f.l.Token, session.ErrFenced)
		}
		if err != nil {
			return fmt.Errorf("%s: check the job's lease: %w", what, err)
		}
		return fn(tx)
	})
}

// AcquireLease implements session.Leaser in one statement: the insert, or
// the update of the job's row under its row lock when it is free, run out
// or the holder's own, so of concurrent callers only one gets it. When it
// is not taken, the same statement reads the current holder's lease.
func (s *Store) AcquireLease(ctx context.Context, job, holder string, now time.Time, ttl time.Duration) (session.Lease, bool, error) {
	if err := session.ValidateLeaseRequest(job, holder, now, ttl); err != nil {
		return session.Lease{}, false, err
	}
	now = session.Normalize(now)
	until := session.Normalize(now.Add(ttl))
	leases := s.table("leases")
	var (
		l  = session.Lease{Job: job}
		ok bool
	)
	err := s.db.QueryRow(ctx, `WITH got AS (
			INSERT INTO `+leases+` AS l (job, holder, token, expires_at) VALUES ($1, $2, 1, $4)
			ON CONFLICT (job) DO UPDATE SET
				token = CASE WHEN l.holder = EXCLUDED.holder THEN l.token ELSE l.token + 1 END,
				holder = EXCLUDED.holder,
				expires_at = EXCLUDED.expires_at
			WHERE l.holder = EXCLUDED.holder OR l.holder = '' OR l.expires_at <= $3
			RETURNING holder, token, expires_at, true AS ok
		)
		SELECT holder, token, expires_at, ok FROM got
		UNION ALL
		SELECT holder, token, expires_at, false FROM `+leases+` WHERE job = $1 AND NOT EXISTS (SELECT 1 FROM got)`,
		job, holder, now, until).Scan(&l.Holder, &l.Token, &l.Until, &ok)
	if errors.Is(err, pgx.ErrNoRows) {
		// Taken by a concurrent caller after this statement's snapshot.
		return session.Lease{}, false, nil
	}
	if err != nil {
		return session.Lease{}, false, fmt.Errorf("acquire lease of job %q: %w", job, err)
	}
	l.Until = session.Normalize(l.Until)
	return l, ok, nil
}

// RenewLease implements session.Leaser.
func (s *Store) RenewLease(ctx context.Context, l session.Lease, now time.Time, ttl time.Duration) (session.Lease, error) {
	if err := session.ValidateLeaseRequest(l.Job, l.Holder, now, ttl); err != nil {
		return session.Lease{}, err
	}
	until := session.Normalize(now.Add(ttl))
	err := s.db.QueryRow(ctx, `UPDATE `+s.table("leases")+` SET expires_at = $4
		WHERE job = $1 AND holder = $2 AND token = $3 RETURNING expires_at`,
		l.Job, l.Holder, l.Token, until).Scan(&l.Until)
	if errors.Is(err, pgx.ErrNoRows) {
		err = session.ErrLeaseLost
	}
	if err != nil {
		return session.Lease{}, fmt.Errorf("renew lease of job %q: %w", l.Job, err)
	}
	l.Until = session.Normalize(l.Until)
	return l, nil
}

// ReleaseLease implements session.Leaser.
func (s *Store) ReleaseLease(ctx context.Context, l session.Lease) error {
	if err := session.ValidateLease(l); err != nil {
		return err
	}
	_, err := s.db.Exec(ctx, `UPDATE `+s.table("leases")+` SET holder = ''
		WHERE job = $1 AND holder = $2 AND token = $3`, l.Job, l.Holder, l.Token)
	if err != nil {
		return fmt.Errorf("release lease of job %q: %w", l.Job, err)
	}
	return nil
}

// SetJobEnabled implements session.Leaser.
func (s *Store) SetJobEnabled(ctx context.Context, job string, enabled bool) error {
	if err := session.ValidateJobName(job); err != nil {
		return err
	}
	_, err := s.db.Exec(ctx, `INSERT INTO `+s.table("job_state")+` (job, enabled) VALUES ($1, $2)
		ON CONFLICT (job) DO UPDATE SET enabled = EXCLUDED.enabled`, job, enabled)
	if err != nil {
		return fmt.Errorf("set job %q enabled: %w", job, err)
	}
	return nil
}

// JobEnabled implements session.Leaser.
func (s *Store) JobEnabled(ctx context.Context, job string) (bool, error) {
	if err := session.ValidateJobName(job); err != nil {
		return false, err
	}
	var enabled bool
	err := s.db.QueryRow(ctx, `SELECT enabled FROM `+s.table("job_state")+` WHERE job = $1`, job).Scan(&enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read whether job %q is enabled: %w", job, err)
	}
	return enabled, nil
}

var _ session.LeaseBatcher = (*Store)(nil)

// JobStates implements session.LeaseBatcher in one statement.
func (s *Store) JobStates(ctx context.Context, jobs []string) ([]session.JobState, error) {
	if err := session.ValidateBatch(jobs); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT j.job, COALESCE(e.enabled, false), COALESCE(l.holder, ''), COALESCE(l.token, 0), l.expires_at
		FROM unnest($1::text[]) WITH ORDINALITY AS j(job, n)
		LEFT JOIN `+s.table("job_state")+` e ON e.job = j.job
		LEFT JOIN `+s.table("leases")+` l ON l.job = j.job
		ORDER BY j.n`, jobs)
	if err != nil {
		return nil, fmt.Errorf("read the state of %d jobs: %w", len(jobs), err)
	}
	defer rows.Close()
	out := make([]session.JobState, 0, len(jobs))
	for rows.Next() {
		var st session.JobState
		var until *time.Time
		if err := rows.Scan(&st.Job, &st.Enabled, &st.Lease.Holder, &st.Lease.Token, &until); err != nil {
			return nil, fmt.Errorf("read the state of %d jobs: %w", len(jobs), err)
		}
		st.Lease.Job = st.Job
		if until != nil {
			st.Lease.Until = session.Normalize(*until)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the state of %d jobs: %w", len(jobs), err)
	}
	return out, nil
}

// RenewLeases implements session.LeaseBatcher in one statement: each row
// is updated under its lock only while the lease is still the caller's.
func (s *Store) RenewLeases(ctx context.Context, ls []session.Lease, now time.Time, ttl time.Duration) ([]session.Lease, []bool, error) {
	if len(ls) > session.MaxBatch {
		return nil, nil, session.ValidateBatch(make([]string, len(ls)))
	}
	jobs, holders, tokens := make([]string, len(ls)), make([]string, len(ls)), make([]int64, len(ls))
	for i, l := range ls {
		if err := session.ValidateLeaseRequest(l.Job, l.Holder, now, ttl); err != nil {
			return nil, nil, err
		}
		jobs[i], holders[i], tokens[i] = l.Job, l.Holder, l.Token
	}
	until := session.Normalize(now.Add(ttl))
	rows, err := s.db.Query(ctx, `UPDATE `+s.table("leases")+` AS l SET expires_at = $4
		FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(job, holder, token)
		WHERE l.job = r.job AND l.holder = r.holder AND l.token = r.token
		RETURNING l.job, l.expires_at`, jobs, holders, tokens, until)
	if err != nil {
		return nil, nil, fmt.Errorf("renew %d leases: %w", len(ls), err)
	}
	defer rows.Close()
	got := make(map[string]time.Time, len(ls))
	for rows.Next() {
		var job string
		var t time.Time
		if err := rows.Scan(&job, &t); err != nil {
			return nil, nil, fmt.Errorf("renew %d leases: %w", len(ls), err)
		}
		got[job] = session.Normalize(t)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("renew %d leases: %w", len(ls), err)
	}
	renewed, lost := make([]session.Lease, len(ls)), make([]bool, len(ls))
	for i, l := range ls {
		t, ok := got[l.Job]
		if !ok {
			lost[i] = true
			continue
		}
		l.Until = t
		renewed[i] = l
	}
	return renewed, lost, nil
}

var _ session.Roster = (*Store)(nil)

// Announce implements session.Roster in one statement, which also drops
// announcements that ran out a day before this one's end.
func (s *Store) Announce(ctx context.Context, holder string, until time.Time) error {
	if err := session.ValidateAnnouncement(holder, until, true); err != nil {
		return err
	}
	runners := s.table("runners")
	_, err := s.db.Exec(ctx, `WITH gone AS (DELETE FROM `+runners+` WHERE expires_at < $2::timestamptz - interval '1 day' AND holder <> $1)
		INSERT INTO `+runners+` (holder, expires_at) VALUES ($1, $2)
		ON CONFLICT (holder) DO UPDATE SET expires_at = EXCLUDED.expires_at`, holder, session.Normalize(until))
	if err != nil {
		return fmt.Errorf("announce %q: %w", holder, err)
	}
	return nil
}

// Present implements session.Roster.
func (s *Store) Present(ctx context.Context, now time.Time) ([]string, error) {
	if now.IsZero() {
		return nil, fmt.Errorf("%w: who is present needs the current time", session.ErrInvalid)
	}
	rows, err := s.db.Query(ctx, `SELECT holder FROM `+s.table("runners")+` WHERE expires_at > $1 ORDER BY holder LIMIT $2`,
		session.Normalize(now), session.MaxBatch)
	if err != nil {
		return nil, fmt.Errorf("read who is present: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read who is present: %w", err)
	}
	return out, nil
}

// Withdraw implements session.Roster.
func (s *Store) Withdraw(ctx context.Context, holder string) error {
	if err := session.ValidateAnnouncement(holder, time.Time{}, false); err != nil {
		return err
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM `+s.table("runners")+` WHERE holder = $1`, holder); err != nil {
		return fmt.Errorf("withdraw %q: %w", holder, err)
	}
	return nil
}
