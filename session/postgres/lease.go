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
	err := s.pool.QueryRow(ctx, `WITH got AS (
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
	err := s.pool.QueryRow(ctx, `UPDATE `+s.table("leases")+` SET expires_at = $4
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
	_, err := s.pool.Exec(ctx, `UPDATE `+s.table("leases")+` SET holder = ''
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
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.table("job_state")+` (job, enabled) VALUES ($1, $2)
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
	err := s.pool.QueryRow(ctx, `SELECT enabled FROM `+s.table("job_state")+` WHERE job = $1`, job).Scan(&enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read whether job %q is enabled: %w", job, err)
	}
	return enabled, nil
}
