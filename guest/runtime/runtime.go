package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/wal"
)

// Defaults for Config.
const (
	DefaultPollInterval  = 200 * time.Millisecond
	DefaultVerifyTimeout = time.Minute
	DefaultStartTimeout  = 5 * time.Minute
)

// Config configures a Runtime.
type Config struct {
	Conn          ConnConfig
	Clock         clock.Clock   // nil means the real clock
	Logger        *slog.Logger  // nil means slog.Default()
	PollInterval  time.Duration // how often waits look again; 0 means DefaultPollInterval
	VerifyTimeout time.Duration // how long PrepareArchive waits for its test archive; 0 means DefaultVerifyTimeout
	// StartTimeout is how long Recover waits for a server it started to
	// write its pid file; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// Self is the command that runs this program, which Recover's
	// restore_command calls in fetch mode: the executable and the
	// arguments that select the runtime in a host program that reuses its
	// own executable. Empty means os.Executable() alone.
	Self []string
}

// Runtime does the guest-side work. Its methods are called by the protocol
// server, one at a time.
type Runtime struct {
	cfg    Config
	backup *backup // set between StartBackup and StopBackup
}

// New returns a Runtime.
func New(cfg Config) *Runtime {
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = DefaultVerifyTimeout
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	return &Runtime{cfg: cfg}
}

func (r *Runtime) connect(ctx context.Context) (*pgx.Conn, error) { return Connect(ctx, r.cfg.Conn) }

// PrepareArchive checks the requirements and points archive_command at
// cfg.Dir, creating the folder (0700, owned by the owner of the data
// directory, that is the server's OS user). It then proves the setup by
// switching to a new WAL segment and waiting until the archiver has copied
// it. Idempotent.
func (r *Runtime) PrepareArchive(ctx context.Context, cfg guest.ArchiveConfig) error {
	if !cfg.Codec.Compressed() {
		return fmt.Errorf("prepare archiving: unknown codec %q: want %q or %q", cfg.Codec, guest.CodecZstd, guest.CodecS2)
	}
	cmd, err := ArchiveCommand(cfg.Dir)
	if err != nil {
		return fmt.Errorf("%w: %v", guest.ErrTempFolder, err)
	}
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	inst, err := Scan(ctx, conn)
	if err != nil {
		return err
	}
	if err := guest.CheckRequirements(inst, IsOurs); err != nil {
		return err
	}
	if old, ok := ArchiveDir(inst.ArchiveCommand); ok && old != cfg.Dir {
		return fmt.Errorf("%w: archive_command already copies into %s, not %s", guest.ErrArchiveCommandTaken, old, cfg.Dir)
	}
	if err := prepareDir(cfg.Dir, inst.DataDir, max(cfg.MinFreeBytes, inst.WALSegmentSize)); err != nil {
		return err
	}
	if inst.ArchiveCommand != cmd {
		// ALTER SYSTEM takes no parameters; the command holds no single quote.
		if _, err := conn.Exec(ctx, "ALTER SYSTEM SET archive_command = '"+strings.ReplaceAll(cmd, "'", "''")+"'"); err != nil {
			return fmt.Errorf("set archive_command: %w", err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return fmt.Errorf("reload configuration: %w", err)
		}
		r.cfg.Logger.Info("archive_command set", "dir", cfg.Dir)
	}
	if inst.InRecovery {
		return nil // a standby cannot switch WAL; its archiver is checked by the primary's
	}
	return r.verifyArchiving(ctx, conn, cmd)
}

// verifyArchiving waits until the new archive_command is live, then
// switches WAL and waits until that segment is archived or fails.
func (r *Runtime) verifyArchiving(ctx context.Context, conn *pgx.Conn, cmd string) error {
	deadline := r.cfg.Clock.Now().Add(r.cfg.VerifyTimeout)
	wait := func(what string, done func() (bool, error)) error {
		for {
			ok, err := done()
			if err != nil || ok {
				return err
			}
			if r.cfg.Clock.Now().After(deadline) {
				return fmt.Errorf("verify archiving: timed out waiting for %s", what)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-r.cfg.Clock.After(r.cfg.PollInterval):
			}
		}
	}
	err := wait("the reloaded archive_command", func() (bool, error) {
		var cur string
		err := conn.QueryRow(ctx, "SELECT current_setting('archive_command')").Scan(&cur)
		return cur == cmd, err
	})
	if err != nil {
		return err
	}
	var failedBefore int64
	if err := conn.QueryRow(ctx, "SELECT failed_count FROM pg_stat_archiver").Scan(&failedBefore); err != nil {
		return fmt.Errorf("verify archiving: %w", err)
	}
	// A transaction with an xid writes a commit record, so the switch below
	// always closes a segment with something in it. Its own statement: a
	// planner may drop an unused subquery (PostgreSQL 17 does), and with it
	// the xid. pg_switch_wal returns a position in the segment it closed.
	var segment string
	_, err = conn.Exec(ctx, "SELECT txid_current()")
	if err == nil {
		err = conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&segment)
	}
	if err != nil {
		return fmt.Errorf("verify archiving: switch wal: %w", err)
	}
	return wait("segment "+segment+" to be archived", func() (bool, error) {
		var last, lastFailed *string
		var failed int64
		err := conn.QueryRow(ctx, "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver").Scan(&last, &failed, &lastFailed)
		if err != nil {
			return false, fmt.Errorf("verify archiving: %w", err)
		}
		if failed > failedBefore && lastFailed != nil {
			return false, fmt.Errorf("%w: archiving %s failed (see the PostgreSQL log)", guest.ErrTempFolder, *lastFailed)
		}
		return last != nil && *last >= segment, nil
	})
}

// prepareDir creates dir if needed, gives it to the owner of dataDir with
// mode 0700, and checks it has minFree bytes available.
func prepareDir(dir, dataDir string, minFree int64) error {
	st, err := os.Stat(dataDir)
	if err != nil {
		return fmt.Errorf("%w: cannot stat data directory: %v", guest.ErrTempFolder, err)
	}
	owner, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: cannot tell the owner of the data directory", guest.ErrTempFolder)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("%w: %v", guest.ErrTempFolder, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %v", guest.ErrTempFolder, err)
	}
	// A handle, not the path: a link put there is refused, not followed.
	d, err := openNoFollowDir(dir)
	if err != nil {
		return fmt.Errorf("%w: %s is not a directory: %v", guest.ErrTempFolder, dir, err)
	}
	defer d.Close()
	if os.Geteuid() == 0 {
		if err := d.Chown(int(owner.Uid), int(owner.Gid)); err != nil {
			return fmt.Errorf("%w: %v", guest.ErrTempFolder, err)
		}
	}
	if err := d.Chmod(0o700); err != nil {
		return fmt.Errorf("%w: %v", guest.ErrTempFolder, err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Fstatfs(int(d.Fd()), &fs); err != nil {
		return fmt.Errorf("%w: %v", guest.ErrTempFolder, err)
	}
	if free := int64(fs.Bavail) * int64(fs.Bsize); free < minFree {
		return fmt.Errorf("%w: %s has %d bytes free, needs at least %d", guest.ErrTempFolder, dir, free, minFree)
	}
	return nil
}

// Ready lists the WAL files waiting in dir in WAL order (by name, which
// sorts timelines, then positions, with .partial and .backup files after
// their segment). Temporary files and anything that is not a WAL file name
// are left alone.
func Ready(dir string) ([]guest.File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var files []guest.File
	for _, e := range entries {
		if _, err := wal.ParseFileName(e.Name()); err != nil || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		files = append(files, guest.File{Name: e.Name(), Size: info.Size()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// FolderSpace reports the bytes of WAL waiting in dir and the bytes free on
// its file system.
func FolderSpace(dir string) (guest.Space, error) {
	files, err := Ready(dir)
	if err != nil {
		return guest.Space{}, err
	}
	var sp guest.Space
	for _, f := range files {
		sp.Waiting += f.Size
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return guest.Space{}, fmt.Errorf("free space of %s: %w", dir, err)
	}
	sp.Free = int64(fs.Bavail) * int64(fs.Bsize)
	return sp, nil
}
