package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// Errors for requirements PostgreSQL must meet before WAL can be shipped.
// Runtime.PrepareArchive returns one of them (wrapped, with the detail an
// operator needs) instead of changing a setting it must not change.
var (
	ErrPostgresTooOld      = errors.New("postgresql 13 or later is required (13 to 18 are supported)")
	ErrPostgresTooNew      = errors.New("postgresql release newer than 18 is not supported yet (13 to 18 are)")
	ErrWALLevel            = errors.New("wal_level must be replica or logical")
	ErrArchiveModeOff      = errors.New("archive_mode must be on (changing it needs a restart)")
	ErrArchiveCommandTaken = errors.New("archive_command or archive_library is already set by something else")
	ErrTempFolder          = errors.New("temporary wal folder is not usable")
)

// Other errors of this package.
var (
	// ErrClosed: the runtime was closed.
	ErrClosed = errors.New("runtime closed")
	// ErrNoRuntime: no runtime binary exists for the guest's architecture.
	ErrNoRuntime = errors.New("no runtime binary for this guest")
	// ErrHostKey: the guest's host key is not the one expected (it changed,
	// or the address reaches another machine). Nothing was sent to it.
	ErrHostKey = errors.New("guest host key refused")
	// ErrNoInstance: no running PostgreSQL serves the data directory a
	// Target names (stopped, moved, or never there), or the server found
	// there serves another one.
	ErrNoInstance = errors.New("no running postgresql instance with that data directory")
)

// Target says which guest to deploy into. Credentials belong to the
// Deployer's configuration, never here, so a Target can be logged.
type Target struct {
	Machine string // machine id, for logs and records
	Address string // host:port of the guest's SSH server; unused by local deployers
	// DataDir picks one of several PostgreSQL instances of the guest by
	// its data directory: the runtime reaches it at the port and socket
	// directory its postmaster.pid names, with the deployer's user and
	// credentials, and refuses to start (ErrNoInstance) unless the server
	// it reached serves that directory. Empty: the instance the deployer's
	// connection settings reach.
	DataDir string
}

// Deployer installs the runtime component into guests.
type Deployer interface {
	// Deploy installs the runtime into the target guest, checks its
	// integrity, starts it and returns a handle. On error nothing is left
	// installed. Safe for concurrent use on different targets; each call
	// deploys a new, independent runtime.
	Deploy(ctx context.Context, t Target) (Runtime, error)
}

// Runtime is a deployed, running runtime component. Its methods may be called
// from one goroutine at a time; after Close they return ErrClosed.
type Runtime interface {
	// Scan reports the PostgreSQL instance as it is now. Read-only.
	Scan(ctx context.Context) (Instance, error)

	// PrepareArchive checks the requirements and makes archive_command copy
	// completed WAL into the temporary folder, reloading PostgreSQL's
	// configuration if it changed anything. Idempotent. A requirement not
	// met gives one of the Err* requirement errors and changes nothing.
	PrepareArchive(ctx context.Context, cfg ArchiveConfig) error

	// Ready lists the WAL files waiting in the temporary folder, oldest
	// first (by name: segments, then the .history, .backup and .partial
	// files in WAL order). Read-only.
	Ready(ctx context.Context) ([]File, error)

	// Read streams the named files to fn, one Frame each, in the given
	// order. Each is compressed in the guest and its checksum is taken over
	// the raw bytes as read. An error from fn stops the stream and is
	// returned as is. Read-only.
	Read(ctx context.Context, names []string, fn func(Frame) error) error

	// Remove deletes the named files from the temporary folder. Call it only
	// after the repository durably holds them and they were read back.
	// Idempotent: files already gone are not an error.
	Remove(ctx context.Context, names []string) error

	// Close stops the runtime and uninstalls it from the guest, leaving
	// archiving configured. Idempotent.
	Close(ctx context.Context) error
}

// BackupMode is implemented by runtimes that can hold PostgreSQL in backup
// mode for the parent job's image (check with a type assertion).
type BackupMode interface {
	// StartBackup calls pg_backup_start (a fast checkpoint) on a connection
	// the runtime keeps open until StopBackup, as PostgreSQL requires, and
	// returns the backup's start. A second StartBackup before StopBackup is
	// an error.
	StartBackup(ctx context.Context, label string) (BackupStart, error)
	// StopBackup calls pg_backup_stop on that connection, waiting until the
	// WAL the backup needs is archived, and returns what the restore point
	// must keep.
	StopBackup(ctx context.Context) (BackupStop, error)
}

// SpaceReporter is implemented by runtimes that can tell how full the
// temporary folder is (check with a type assertion).
type SpaceReporter interface {
	// FolderSpace reports the bytes waiting in the temporary folder and the
	// bytes still free on its file system. Read-only.
	FolderSpace(ctx context.Context) (Space, error)
}

// Space is what FolderSpace reports.
type Space struct {
	Waiting int64 `json:"waiting"`
	Free    int64 `json:"free"`
}

// BackupStart is where a base backup begins.
type BackupStart struct {
	LSN      wal.LSN
	Timeline uint32
}

// BackupStop is what pg_backup_stop returned.
type BackupStop struct {
	LSN           wal.LSN
	BackupLabel   string
	TablespaceMap string
}

// ArchiveConfig is what PrepareArchive sets up.
type ArchiveConfig struct {
	// Dir is the temporary folder in the guest that archive_command fills.
	Dir string
	// MinFreeBytes is the free space Dir must have; 0 means one WAL
	// segment.
	MinFreeBytes int64
	// Codec compresses the WAL of this session, streamed (Read) or
	// bundled in the guest (direct shipping): CodecZstd (also when empty)
	// or CodecS2.
	Codec Codec `json:",omitempty"`
}

// Instance describes a PostgreSQL instance found by Scan.
type Instance struct {
	Version        int    // server_version_num, e.g. 150018
	SystemID       uint64 // the cluster's system identifier; keys the repository
	DataDir        string
	Tablespaces    []Tablespace
	Databases      []string
	Running        bool
	InRecovery     bool
	Timeline       uint32
	WALSegmentSize int64
	WALLevel       string
	ArchiveMode    string
	ArchiveCommand string
	ArchiveLibrary string
	Archiver       ArchiverStats
}

// ArchiverStats is PostgreSQL's pg_stat_archiver: whether archive_command
// keeps up. While it fails, PostgreSQL keeps the WAL in pg_wal and retries.
type ArchiverStats struct {
	ArchivedCount   int64
	LastArchivedWAL string
	FailedCount     int64
	LastFailedWAL   string
	LastFailedTime  time.Time
}

// Cluster is a PostgreSQL cluster found in the guest (ClusterLister).
type Cluster struct {
	DataDir string
	Major   int  // from PG_VERSION
	Running bool // a postmaster serves it now; then:
	PID     int  // the postmaster's process id
	// Port and SocketDir are where it listens (postmaster.pid): the port,
	// and its first unix socket directory (empty when it has none).
	Port      int
	SocketDir string
}

// ClusterLister is implemented by runtimes that can find every
// PostgreSQL cluster of their guest, beyond the one they connect to
// (check with a type assertion): several clusters side by side, of one
// release or several, as Debian's pg_lsclusters shows them.
type ClusterLister interface {
	// Clusters lists the clusters running postmasters serve, and the data
	// directories in the usual places that none serves (Running false),
	// sorted by data directory. Read-only. A job with
	// walbackup.Machine.AllInstances protects every running one, each
	// through a runtime deployed for it (Target.DataDir).
	Clusters(ctx context.Context) ([]Cluster, error)
}

// Tablespace is a tablespace outside the data directory.
type Tablespace struct {
	OID      uint32
	Name     string
	Location string
}

// File is a WAL file waiting in the temporary folder.
type File struct {
	Name string // as PostgreSQL named it: segment, .history, .backup or .partial
	Size int64
}

// Codec names how Frame data is encoded.
type Codec string

const (
	CodecNone Codec = "none"
	CodecZstd Codec = "zstd"
	// CodecS2 is an S2 stream (github.com/klauspost/compress/s2): about
	// three times faster to compress than zstd, at half its ratio on WAL.
	CodecS2 Codec = "s2"
)

// Compressed tells whether c is a codec WAL is shipped with: "" (meaning
// CodecZstd), CodecZstd or CodecS2.
func (c Codec) Compressed() bool { return c == "" || c == CodecZstd || c == CodecS2 }

// Frame is one WAL file as Runtime.Read streams it.
type Frame struct {
	Name  string
	Codec Codec
	// Data yields the encoded content. It is valid only until the callback
	// returns.
	Data io.Reader
	// Checksum returns the raw size and the checksum of the raw content
	// as the guest read it (XXH3 for WAL from the temporary folder, SHA-256
	// for other files). The guest knows them only at the end of the file,
	// so they are valid once Data has returned io.EOF.
	Checksum func() (rawSize int64, sum checksum.Sum)
}

// MinVersion is the oldest PostgreSQL (server_version_num) supported;
// MaxVersion is past the newest: a release whose WAL, backup functions
// and recovery settings have been checked (wal.NewestMajor). Nothing
// newer is guessed at.
const (
	MinVersion = wal.OldestMajor * 10000
	MaxVersion = (wal.NewestMajor + 1) * 10000
)

// CheckRequirements tells whether WAL of inst can be shipped, given a test
// for whether an archive_command is already ours. It returns the first unmet
// requirement, wrapped with what was found, or nil.
func CheckRequirements(inst Instance, ours func(archiveCommand string) bool) error {
	switch {
	case inst.Version < MinVersion:
		return fmt.Errorf("%w: found server_version_num %d", ErrPostgresTooOld, inst.Version)
	case inst.Version >= MaxVersion:
		return fmt.Errorf("%w: found server_version_num %d", ErrPostgresTooNew, inst.Version)
	case inst.WALLevel != "replica" && inst.WALLevel != "logical":
		return fmt.Errorf("%w: found %q", ErrWALLevel, inst.WALLevel)
	case inst.ArchiveMode != "on" && inst.ArchiveMode != "always":
		return fmt.Errorf("%w: found %q", ErrArchiveModeOff, inst.ArchiveMode)
	case inst.ArchiveLibrary != "":
		return fmt.Errorf("%w: archive_library is %q", ErrArchiveCommandTaken, inst.ArchiveLibrary)
	case inst.ArchiveCommand != "" && !ours(inst.ArchiveCommand):
		return fmt.Errorf("%w: archive_command is %q", ErrArchiveCommandTaken, inst.ArchiveCommand)
	}
	return nil
}
