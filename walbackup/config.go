package walbackup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/session"
)

// Defaults and limits of Config.
const (
	DefaultLogBackupInterval = 15 * time.Minute
	MaxLogBackupInterval     = 480 * time.Minute
	DefaultWALDir            = "/var/lib/pglogship/wal"
	// DefaultOperationTimeout: a guest, repository or session store call
	// that makes no progress for this long is abandoned.
	DefaultOperationTimeout = 5 * time.Minute
	// DefaultRetryDelay is the first retry after a failed ship; each
	// further retry within the interval waits twice as long.
	DefaultRetryDelay = time.Minute
	// DefaultFullImageEvery: after so many incremental images a full one,
	// so a restore needs a short chain and retention can free old images
	// (with a daily parent, a full image a week).
	DefaultFullImageEvery = 6
)

// ChildJobName is the name of the child job of a parent job.
func ChildJobName(parent string) string { return parent + " PostgreSQL Log Backup" }

// Machine is a PostgreSQL machine of the job.
type Machine struct {
	ID      string // the hypervisor's machine id
	Address string // where the guest OS answers SSH (host:port); unused by local deployers
	// RepositoryPath is where the guest sees the root of a file system
	// repository itself (an NFS mount of its own), for direct shipping
	// into it; empty when it does not. S3-compatible repositories need
	// none: they authorise each upload.
	RepositoryPath string
	// RepositorySFTP is the guest's own access to an SFTP repository (a
	// key of its own in the guest, never the host's), for direct shipping
	// into it; nil when it has none.
	RepositorySFTP *guest.SFTPAccess
}

// Config configures a Job. Zero values take the Default... constants, except
// LogBackupInterval.
type Config struct {
	Name     string // the parent job's name; the child is ChildJobName(Name)
	Machines []Machine
	Schedule Schedule // nil: the parent runs only when started by hand
	// SkipMissedRun: a scheduled parent run missed while the host program
	// was down is skipped. By default it runs once at start-up.
	SkipMissedRun bool
	// Quiesce freezes the guest's file systems around the snapshot where
	// the hypervisor can (a guest agent); it is skipped where it cannot.
	Quiesce bool
	// LogBackupInterval is how often the child job ships WAL: at least a
	// minute, at most MaxLogBackupInterval. Unlike other fields it has to be
	// set (DefaultLogBackupInterval is the usual choice): an interval of 0
	// is a mistake to report, not a request for the default.
	LogBackupInterval time.Duration
	WALDir            string // temporary WAL folder in each guest
	Hypervisor        hypervisor.Hypervisor
	Guests            guest.Deployer
	Repository        repository.Repository
	Sessions          session.Store
	Key               *bundle.Key // encrypts bundles when set; never stored
	Retention         Retention   // the zero value keeps everything
	// FullImageEvery is how many incremental images may follow a full one
	// before the next full one (default DefaultFullImageEvery); negative
	// never forces one. Every restore point of a chain is kept as long as
	// a later one needs it, so retention frees images only chain by chain.
	FullImageEvery int
	Clock          clock.Clock
	Logger         *slog.Logger
	Observer       func(Event) // optional; called from the job's goroutine, must not block
	// OperationTimeout bounds each call to a guest, the repository or the
	// session store by progress, not length: shipping may take as long as
	// the WAL needs while bytes keep moving, but a call with no progress
	// for this long is abandoned, so a hung guest cannot block Disable.
	OperationTimeout time.Duration
	// RetryDelay is how long after a failed ship (repository or guest
	// unreachable) the job tries again; the delay doubles with each retry
	// until the next interval, which always tries.
	RetryDelay time.Duration
	// Shipping says how WAL travels from the guests to the repository.
	Shipping Shipping

	summaryFilter func(segment string, w io.Writer) io.Writer // tests: what the WAL summarizer reads (export_test.go)
}

func (c *Config) setDefaults() {
	if c.WALDir == "" {
		c.WALDir = DefaultWALDir
	}
	if c.Clock == nil {
		c.Clock = clock.New()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = func(Event) {}
	}
	if c.OperationTimeout == 0 {
		c.OperationTimeout = DefaultOperationTimeout
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.FullImageEvery == 0 {
		c.FullImageEvery = DefaultFullImageEvery
	}
	c.Shipping.setDefaults()
}

func (c *Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("job name is required")
	case len(c.Machines) == 0:
		return errors.New("a job needs at least one machine")
	case c.LogBackupInterval < time.Minute || c.LogBackupInterval > MaxLogBackupInterval:
		return fmt.Errorf("log backup interval %v: must be from 1 minute to %v (the default is %v)",
			c.LogBackupInterval, MaxLogBackupInterval, DefaultLogBackupInterval)
	case c.Hypervisor == nil || c.Guests == nil || c.Repository == nil || c.Sessions == nil:
		return errors.New("hypervisor, guest deployer, repository and session store are required")
	case c.OperationTimeout < 0 || c.RetryDelay < 0:
		return errors.New("operation timeout and retry delay cannot be negative")
	}
	if err := c.Shipping.validate(c); err != nil {
		return err
	}
	if err := c.Retention.validate(); err != nil {
		return err
	}
	if v, ok := c.Schedule.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, m := range c.Machines {
		if m.ID == "" || seen[m.ID] {
			return fmt.Errorf("machine id %q: empty or repeated", m.ID)
		}
		seen[m.ID] = true
	}
	return nil
}

// EventKind names what an Event reports.
type EventKind string

const (
	EventSessionStarted EventKind = "session_started"
	EventSessionEnded   EventKind = "session_ended"
	EventBatchShipped   EventKind = "batch_shipped"
	EventWarning        EventKind = "warning"
	// EventShippingPath: the path a machine's WAL takes from now on was
	// chosen; Direct says which, Message why.
	EventShippingPath EventKind = "shipping_path"
	// EventIdle: the job has done everything due and waits for the next
	// interval, retry, parent run or command; Event.Next says when it wakes
	// by itself. Tests step virtual time on it.
	EventIdle EventKind = "idle"
)

// Event is what the job tells its observer, for metrics and tests.
type Event struct {
	Kind    EventKind
	Session session.Session // the session concerned, if any
	Machine string
	Files   int
	Bytes   int64         // raw WAL bytes shipped
	Lag     time.Duration // how late the batch was stored after its interval was due
	Message string
	Next    time.Time // EventIdle: when the job wakes next unless a command comes first
	// Direct: EventShippingPath and EventBatchShipped: the WAL goes (went)
	// from the guest to the repository without passing through the host.
	Direct bool
	// Server: with Direct, the log shipping server it goes through
	// (Shipping.Server); empty when the guest connects itself.
	Server string
}
