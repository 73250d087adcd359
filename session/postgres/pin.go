package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

var _ session.Pinner = (*Store)(nil)

// Pin implements session.Pinner: the upsert, and the removal of the job's
// pins that ran out (crashed restores'), in one transaction.
func (s *Store) Pin(ctx context.Context, p session.Pin, now time.Time) error {
	if err := session.ValidatePin(p, now); err != nil {
		return err
	}
	rps := p.RestorePoints
	if rps == nil {
		rps = []string{}
	}
	pins := s.table("pins")
	_, err := s.db.Exec(ctx, `WITH gone AS (
			DELETE FROM `+pins+` WHERE job = $1 AND expires_at <= $10 AND id <> $2
		)
		INSERT INTO `+pins+` (job, id, purpose, machine, system_id, restore_points, timeline, start_lsn, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8::pg_lsn, $9)
		ON CONFLICT (job, id) DO UPDATE SET purpose = EXCLUDED.purpose, machine = EXCLUDED.machine,
			system_id = EXCLUDED.system_id, restore_points = EXCLUDED.restore_points, timeline = EXCLUDED.timeline,
			start_lsn = EXCLUDED.start_lsn, expires_at = EXCLUDED.expires_at`,
		p.Job, p.ID, p.Purpose, p.Machine, strconv.FormatUint(p.SystemID, 10), rps, int64(p.Timeline),
		p.StartLSN.String(), session.Normalize(p.Until), session.Normalize(now))
	if err != nil {
		return fmt.Errorf("pin %s of job %q: %w", p.ID, p.Job, err)
	}
	return nil
}

// Unpin implements session.Pinner.
func (s *Store) Unpin(ctx context.Context, job, id string) error {
	if err := session.ValidateUnpin(job, id); err != nil {
		return err
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM `+s.table("pins")+` WHERE job = $1 AND id = $2`, job, id); err != nil {
		return fmt.Errorf("unpin %s of job %q: %w", id, job, err)
	}
	return nil
}

// Pins implements session.Pinner.
func (s *Store) Pins(ctx context.Context, job string, now time.Time) ([]session.Pin, error) {
	if err := session.ValidatePinsQuery(job, now); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT id, purpose, machine, system_id, restore_points, timeline, start_lsn::text, expires_at
		FROM `+s.table("pins")+` WHERE job = $1 AND expires_at > $2 ORDER BY id`, job, session.Normalize(now))
	if err != nil {
		return nil, fmt.Errorf("pins of job %q: %w", job, err)
	}
	defer rows.Close()
	out := []session.Pin{}
	for rows.Next() {
		p := session.Pin{Job: job}
		var sysid, lsn string
		var tli int64
		if err := rows.Scan(&p.ID, &p.Purpose, &p.Machine, &sysid, &p.RestorePoints, &tli, &lsn, &p.Until); err != nil {
			return nil, fmt.Errorf("pins of job %q: %w", job, err)
		}
		if p.SystemID, err = strconv.ParseUint(sysid, 10, 64); err != nil {
			return nil, fmt.Errorf("pins of job %q: pin %s: system identifier %q: %w", job, p.ID, sysid, err)
		}
		if p.StartLSN, err = wal.ParseLSN(lsn); err != nil {
			return nil, fmt.Errorf("pins of job %q: pin %s: %w", job, p.ID, err)
		}
		p.Timeline, p.Until = uint32(tli), session.Normalize(p.Until)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pins of job %q: %w", job, err)
	}
	return out, nil
}
