package runtime

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/wal"
)

// backup holds the connection that is in backup mode: PostgreSQL ends a
// non-exclusive backup when the session that started it ends.
type backup struct {
	conn    *pgx.Conn
	version int
}

// StartBackup puts PostgreSQL in backup mode with a fast checkpoint on a
// connection kept until StopBackup.
func (r *Runtime) StartBackup(ctx context.Context, label string) (guest.BackupStart, error) {
	if r.backup != nil {
		return guest.BackupStart{}, errors.New("start backup: a backup is already running in this session")
	}
	conn, err := r.connect(ctx)
	if err != nil {
		return guest.BackupStart{}, err
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return guest.BackupStart{}, fmt.Errorf("start backup: %w", err)
	}
	q := "SELECT pg_backup_start($1, true)::text"
	if version < 150000 {
		q = "SELECT pg_start_backup($1, true, false)::text"
	}
	var lsnText string
	var tli uint32
	err = conn.QueryRow(ctx, q, label).Scan(&lsnText)
	if err == nil {
		err = conn.QueryRow(ctx, "SELECT timeline_id FROM pg_control_checkpoint()").Scan(&tli)
	}
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return guest.BackupStart{}, fmt.Errorf("start backup: %w", err)
	}
	lsn, err := wal.ParseLSN(lsnText)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return guest.BackupStart{}, fmt.Errorf("start backup: %w", err)
	}
	r.backup = &backup{conn: conn, version: version}
	return guest.BackupStart{LSN: lsn, Timeline: tli}, nil
}

// StopBackup ends backup mode, waiting for the WAL the backup needs to be
// archived, and returns backup_label and tablespace_map.
func (r *Runtime) StopBackup(ctx context.Context) (guest.BackupStop, error) {
	b := r.backup
	if b == nil {
		return guest.BackupStop{}, errors.New("stop backup: no backup is running in this session")
	}
	r.backup = nil
	defer b.conn.Close(context.WithoutCancel(ctx))
	q := "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(true)"
	if b.version < 150000 {
		q = "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, true)"
	}
	var out guest.BackupStop
	var lsnText string
	if err := b.conn.QueryRow(ctx, q).Scan(&lsnText, &out.BackupLabel, &out.TablespaceMap); err != nil {
		return guest.BackupStop{}, fmt.Errorf("stop backup: %w", err)
	}
	lsn, err := wal.ParseLSN(lsnText)
	if err != nil {
		return guest.BackupStop{}, fmt.Errorf("stop backup: %w", err)
	}
	out.LSN = lsn
	return out, nil
}
