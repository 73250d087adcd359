package guest

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// Errors of recovery (Recoverer).
var (
	// ErrNoSuchWAL: the archive does not hold the WAL file asked for. A
	// FetchFunc returns an error matching it; recovery asks for files past
	// the end of the archive, so this is how a restore normally ends.
	ErrNoSuchWAL = errors.New("no such wal file in the archive")
	// ErrServerRunning: a postmaster is running on the data directory;
	// nothing was changed.
	ErrServerRunning = errors.New("postgresql is running on the data directory")
	// ErrTargetNotReached: the archive ended before the recovery target,
	// and PostgreSQL stopped (FATAL: recovery ended before configured
	// recovery target was reached).
	ErrTargetNotReached = errors.New("the archive ends before the recovery target")
	// ErrRecoveryFailed: PostgreSQL stopped during recovery for another
	// reason; the error carries the server's own log line.
	ErrRecoveryFailed = errors.New("postgresql stopped during recovery")
	// ErrReleaseMismatch: the PostgreSQL binaries a recovery would run are
	// of another major release than the restored cluster (PG_VERSION):
	// PostgreSQL cannot read or replay another major's files and WAL.
	// Nothing was changed.
	ErrReleaseMismatch = errors.New("postgresql major release of the binaries differs from the restored cluster's")
	// ErrNoPgDump: the guest has no pg_dump of the server's major release
	// where the runtime looked; the error says what to install.
	ErrNoPgDump = errors.New("no pg_dump of the server's release in the guest")
)

// FetchFunc writes the WAL file name (a segment, or a .partial, .backup or
// .history file) from the archive to w. A file the archive does not hold
// gives an error matching ErrNoSuchWAL. The content must have been verified
// against its stored checksum before FetchFunc returns nil, unless it went
// through ZstdReceiver, whose receiver checks it; after an error, what was
// written to w is discarded. It is called from several goroutines at once
// (files are fetched ahead in parallel), each with its own w.
type FetchFunc func(ctx context.Context, name string, w io.Writer) error

// ZstdReceiver is implemented by the writer some Recoverers hand their
// FetchFunc (check with a type assertion): one that decompresses what it
// receives anyway, such as a host's link to a guest. A FetchFunc that holds
// the file as a zstd stream (a repository stores it so) may then hand the
// stream over as it is, instead of decompressing it only for the link to
// compress it again: it calls Zstd once, before writing anything to the
// receiver itself, with the size and XXH3 checksum of the raw content as
// stored with the file, and writes the stream (at most a window of
// MaxZstdWindow) to the writer Zstd returns. The receiver decompresses it
// and checks size and checksum before the file is used; a mismatch, or a
// checksum of another algorithm, fails that file's fetch.
type ZstdReceiver interface {
	io.Writer
	Zstd(rawSize int64, sum checksum.Sum) io.Writer
}

// MaxZstdWindow is the largest zstd window a ZstdReceiver's receiver
// accepts, bounding its memory.
const MaxZstdWindow = zpool.MaxWindow

// Recoverer is implemented by runtimes that can bring a restored data
// directory to a point in time by archive recovery, serving PostgreSQL's
// restore_command from the host (check with a type assertion). Like the
// rest of Runtime, it is called from one goroutine at a time.
type Recoverer interface {
	// Recover writes backup_label, tablespace_map and recovery.signal into
	// cfg.DataDir, appends cfg.Settings and a restore_command that asks the
	// runtime to postgresql.auto.conf, starts PostgreSQL there (never as
	// root) and answers each restore_command with fetch, fetching the next
	// segments ahead. It returns when recovery has ended: promoted, paused
	// or shut down at the target, as recovery_target_action says. The
	// server is left running (unless it shut down), with restore_command
	// removed again, since the runtime that served it goes away.
	//
	// A data directory with a live postmaster gives ErrServerRunning and
	// is left alone. A server that stops during recovery gives
	// ErrTargetNotReached or ErrRecoveryFailed, with the server's own
	// report in the message (its last FATAL or PANIC line and the DETAIL,
	// HINT and CONTEXT lines after it, bounded); if Recover fails or its
	// context ends while the server is still recovering, it stops the
	// server, which cannot go on without it. With
	// an error the result still holds the counts and the server's log, as
	// far as the runtime got. Not idempotent: a second call on a promoted
	// directory recovers nothing.
	Recover(ctx context.Context, cfg RecoveryConfig, fetch FetchFunc) (RecoveryResult, error)
}

// DefaultPrefetch is how many segments recovery fetches ahead when
// RecoveryConfig.Prefetch is 0.
const DefaultPrefetch = 8

// RecoveryConfig says what Recover recovers and how.
type RecoveryConfig struct {
	// DataDir is the restored data directory, an absolute path in the
	// guest. It must not contain characters a shell treats specially
	// inside double quotes (" $ ` \) or line breaks: pg_ctl puts it into a
	// shell command that way.
	DataDir string `json:"data_dir"`
	// BackupLabel is written as DataDir/backup_label before the start;
	// empty: none is written.
	BackupLabel string `json:"backup_label,omitempty"`
	// TablespaceMap is written as DataDir/tablespace_map; empty: none.
	TablespaceMap string `json:"tablespace_map,omitempty"`
	// Tablespaces are the restore's own tablespace directories, by OID:
	// where it placed them (a physical restore), or the paths of
	// TablespaceMap (images that keep them where they were). Run as root,
	// Recover hands DataDir and these directories to the server user, and
	// refuses, before changing anything, a symbolic link in
	// DataDir/pg_tblspc that is not pg_tblspc/<oid> pointing to
	// Tablespaces[oid]: the data directory may be the server user's, and
	// a link planted there must not hand over what it points to.
	Tablespaces map[uint32]string `json:"tablespaces,omitempty"`
	// Settings are appended to postgresql.auto.conf, replacing earlier
	// values there: recovery_target*, recovery_target_timeline,
	// recovery_target_action, port, unix_socket_directories,
	// listen_addresses, archive_mode... They stay after recovery.
	// restore_command is the runtime's own and may not be set here.
	Settings map[string]string `json:"settings,omitempty"`
	// OSUser runs PostgreSQL when the runtime runs as root; the data
	// directory is handed to it. Empty: the owner of DataDir. A runtime
	// that is not root runs PostgreSQL as itself, and OSUser must be empty
	// or name that user.
	OSUser string `json:"os_user,omitempty"`
	// ConfigFile is postgresql.conf when it lives outside DataDir (Debian
	// keeps it in /etc/postgresql/<version>/<cluster>); the server starts
	// with it, on DataDir whatever data_directory it sets, and, unless
	// Settings say otherwise, without its external_pid_file (and before
	// 15 with its statistics in DataDir): it may be the original's, whose
	// server runs beside. Empty: DataDir's own. Same characters as DataDir,
	// and neither path with spaces or quotes.
	ConfigFile string `json:"config_file,omitempty"`
	// BinDir holds pg_ctl. Empty: /usr/lib/postgresql/<major>/bin or
	// /usr/pgsql-<major>/bin for the major version in DataDir/PG_VERSION,
	// else the pg_ctl on PATH.
	BinDir string `json:"bin_dir,omitempty"`
	// Prefetch is how many segments are fetched ahead of the one
	// PostgreSQL asks for, in parallel; they wait in a private folder in
	// pg_wal, so it needs room for that many. 0 means DefaultPrefetch,
	// negative means none.
	Prefetch int `json:"prefetch,omitempty"`
}

// RecoveryResult is what Recover reports.
type RecoveryResult struct {
	// Timeline the server is on: after a promotion its new one; when
	// paused, the timeline of its latest restartpoint.
	Timeline uint32 `json:"timeline"`
	// LSN is where replay ended (pg_last_wal_replay_lsn); 0 when the
	// server shut down at the target.
	LSN wal.LSN `json:"lsn"`
	// LastReplayTime is the commit time of the last transaction replayed
	// (pg_last_xact_replay_timestamp); zero if none was, or the server
	// shut down.
	LastReplayTime time.Time `json:"last_replay_time"`
	// Promoted: recovery ended and the server accepts writes. Paused: it
	// holds at the target, read-only. Neither: it shut down at the
	// target.
	Promoted bool `json:"promoted"`
	Paused   bool `json:"paused"`
	// Fetched counts the files received from the host, asked for or
	// fetched ahead.
	Fetched int `json:"fetched"`
	// Requests counts restore_command calls; FromSpool those answered at
	// once from files fetched ahead, Waited those that waited on the host,
	// InFlight those of them whose file was already being fetched ahead.
	// History files and files past the end of the archive always wait.
	Requests  int `json:"requests"`
	FromSpool int `json:"from_spool"`
	Waited    int `json:"waited"`
	InFlight  int `json:"in_flight"`
	// Log is the tail of the server log written during recovery.
	Log string `json:"log"`
}

// ServerControl is implemented by runtimes that can check and stop a
// PostgreSQL server in the guest, such as one a restore started (check
// with a type assertion). A restore drill uses it.
type ServerControl interface {
	// CheckServer connects to the server at cfg's address with the
	// runtime's credentials and reports whether it answers, whether every
	// database that allows connections connects, and whether cfg.SQL runs.
	// Failures of those are in the result; the error is for a check that
	// could not run at all. Read-only unless cfg.SQL writes.
	CheckServer(ctx context.Context, cfg CheckConfig) (CheckResult, error)
	// StopServer stops the server of dataDir (fast, then immediate) as the
	// directory's owner. A server that is not running is no error.
	StopServer(ctx context.Context, dataDir string) error
}

// CheckConfig says which server CheckServer checks and what it runs. The
// runtime connects as it connects to its own instance (same user, same
// authentication), on Port, and through SocketDir when it uses a socket.
type CheckConfig struct {
	Port      int      `json:"port"`
	SocketDir string   `json:"socket_dir,omitempty"` // the server's socket directory; empty: the runtime's own
	SQL       []string `json:"sql,omitempty"`        // statements that must succeed
	Database  string   `json:"database,omitempty"`   // where SQL runs; empty: postgres
}

// CheckResult is what CheckServer found.
type CheckResult struct {
	Version   int      `json:"version"`   // server_version_num
	Databases []string `json:"databases"` // every database that connected
	Failures  []string `json:"failures,omitempty"`
}

// Dumper is implemented by runtimes that can export databases of a
// server in the guest with the guest's own pg_dump (check with a type
// assertion). An export (walbackup.Job.Export) uses it on the scratch
// server it restored.
type Dumper interface {
	// Dump runs pg_dump of the server's major release (from
	// cfg.DataDir's PG_VERSION) once per database, in directory format,
	// into cfg.Dir/<database>, connecting as the runtime connects to its
	// own instance. cfg.Dir must not exist; it is made, private to the
	// runtime's user. No pg_dump of that release: ErrNoPgDump, before
	// anything is made. A failed dump leaves what it wrote, and says why.
	Dump(ctx context.Context, cfg DumpConfig) (DumpResult, error)
}

// DumpConfig says which server Dump exports, what and where.
type DumpConfig struct {
	DataDir   string   `json:"data_dir"`             // the server's data directory
	Port      int      `json:"port,omitempty"`       // the server's port; 0: from its postmaster.pid
	SocketDir string   `json:"socket_dir,omitempty"` // its socket directory; empty: from postmaster.pid with Port 0, else the runtime's own
	Databases []string `json:"databases"`            // at least one
	Dir       string   `json:"dir"`                  // a new directory in the guest
	// BinDir holds pg_dump; empty: the release's usual place, then PATH.
	BinDir string `json:"bin_dir,omitempty"`
}

// DumpResult is what Dump wrote.
type DumpResult struct {
	Version int            `json:"version"` // pg_dump's major release
	Dumps   []DatabaseDump `json:"dumps"`
}

// DatabaseDump is one database's dump.
type DatabaseDump struct {
	Database string `json:"database"`
	Dir      string `json:"dir"`   // pg_dump's directory format
	Bytes    int64  `json:"bytes"` // of the files in Dir
}

// ReleaseChecker is implemented by runtimes that can say whether the
// guest has PostgreSQL binaries of a major release (check with a type
// assertion). A restore asks before it writes anything.
type ReleaseChecker interface {
	// CheckRelease finds pg_ctl of release major (in binDir when set,
	// else the release's usual places, then PATH) and checks its version:
	// another release, or none found, is ErrReleaseMismatch.
	CheckRelease(ctx context.Context, major int, binDir string) error
}
