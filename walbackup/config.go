package walbackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
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
	// Instances are the data directories of the PostgreSQL instances to
	// protect on this machine (several clusters side by side, of one
	// release or several). Each is reached through the runtime as
	// guest.Target.DataDir says, has its own temporary WAL folder under
	// WALDir (InstanceWALDir), its own WAL chain and restore points (its
	// system identifier keys them), and its own counters in each child
	// session; the parent holds every one in backup mode around the
	// machine's image. Empty: the one instance the deployer's connection
	// settings reach, with WALDir itself as its folder.
	Instances []string
	// AllInstances protects every instance the guest runs, as its
	// runtime finds them (guest.ClusterLister: the running postmasters),
	// in place of Instances: found again at every child and parent session
	// start. An instance that appears is shipped from then on and gets its
	// first restore point at the next parent session; one whose restore
	// points exist but that no longer runs is reported as a warning, its
	// chain kept for retention.
	AllInstances bool
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
	// Observer, optional, hears what the job does (metrics.Collector
	// turns it into Prometheus metrics). It is called from the job's
	// goroutine, and with EventDrill from Drill's caller; it must not
	// block.
	Observer func(Event)
	// Progress, optional, hears how long work moves on: EventProgress
	// (image export and restore) and EventWALFetched (each WAL file a
	// recovery fetched), for a progress bar. Kept apart from Observer
	// because it is called often, per file, from the goroutine doing the
	// work; it must be cheap and must not block.
	Progress func(Event)
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
	if c.Progress == nil {
		c.Progress = func(Event) {}
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
	instances := 0 // each with its counters in every child session
	for _, m := range c.Machines {
		if m.ID == "" || seen[m.ID] {
			return fmt.Errorf("machine id %q: empty or repeated", m.ID)
		}
		seen[m.ID] = true
		if len(m.Instances) > 0 && m.AllInstances {
			return fmt.Errorf("machine %s: Instances and AllInstances both set: list the instances, or let the job find them all", m.ID)
		}
		dirs := map[string]bool{}
		instances += max(len(m.Instances), 1)
		for _, d := range m.Instances {
			switch {
			case len(d) > session.MaxNameLen:
				return fmt.Errorf("machine %s: instance %.40q...: a data directory of at most %d bytes", m.ID, d, session.MaxNameLen)
			case !filepath.IsAbs(d) || filepath.Clean(d) != d:
				return fmt.Errorf("machine %s: instance %q: a data directory must be an absolute, clean path", m.ID, d)
			case dirs[d]:
				return fmt.Errorf("machine %s: instance %s listed twice", m.ID, d)
			}
			dirs[d] = true
		}
	}
	if instances > session.MaxInstances {
		return fmt.Errorf("%d instances in one job, at most %d: split the machines over several jobs", instances, session.MaxInstances)
	}
	return nil
}

// InstanceWALDir is the temporary WAL folder of the instance whose data
// directory is dataDir, under walDir (Config.WALDir): a folder of its own
// named after the data directory, so the instances of one machine never
// share one; walDir itself for a machine's only instance (dataDir empty).
func InstanceWALDir(walDir, dataDir string) string {
	if dataDir == "" {
		return walDir
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, strings.Trim(dataDir, "/"))
	sum := sha256.Sum256([]byte(dataDir))
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	return filepath.Join(walDir, name+"-"+hex.EncodeToString(sum[:4]))
}

// instanceOf is what Event.Instance says of dataDir on machine: the data
// directory when the machine has several instances, else nothing.
func (j *Job) instanceOf(machine, dataDir string) string {
	for _, m := range j.cfg.Machines {
		if m.ID == machine && (len(m.Instances) > 0 || m.AllInstances) {
			return dataDir
		}
	}
	return ""
}

// instancesOf lists the data directories of m's instances: "" for the one
// instance of a machine that lists none.
func instancesOf(m Machine) []string {
	if len(m.Instances) == 0 {
		return []string{""}
	}
	return m.Instances
}

// walDir is the temporary WAL folder of the instance dataDir.
func (j *Job) walDir(dataDir string) string { return InstanceWALDir(j.cfg.WALDir, dataDir) }

// instanceName names an instance in messages: the machine, with the data
// directory when the machine has several.
func instanceName(machine, dataDir string) string {
	if dataDir == "" {
		return machine
	}
	return machine + " instance " + dataDir
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
	// EventRestorePoint: a parent session committed a restore point of
	// Machine (Instance): Event.RestorePoint, consistent as of Event.Time.
	EventRestorePoint EventKind = "restore_point"
	// EventFolder: how full an instance's temporary WAL folder in its guest
	// is, after each interval's ship: Event.Waiting and Event.Free bytes.
	EventFolder EventKind = "folder"
	// EventDrill: a restore drill of Event.RestorePoint ended; Event.Passed
	// says how (false also when the drill failed before its checks).
	EventDrill EventKind = "drill"
	// EventExport: an export of databases (Job.Export) from
	// Event.RestorePoint ended; Event.Passed says whether every database
	// was dumped.
	EventExport EventKind = "export"
	// EventCaughtUp: an interval's ship found no new WAL: everything the
	// instance archived is in the repository (its RPO is current).
	EventCaughtUp EventKind = "caught_up"
	// EventProgress (to Config.Progress, not Observer): an image export
	// (parent session) or image restore (Restore, Drill) moved on:
	// Event.Message names which ("image export", "image restore"), Bytes
	// are done of Total (0 when unknown).
	EventProgress EventKind = "progress"
	// EventWALFetched (to Config.Progress, not Observer): a restore's
	// recovery fetched the WAL file Event.Message from the repository
	// (FetchFunc); Bytes were sent to the guest for it (compressed when
	// the guest takes it so).
	EventWALFetched EventKind = "wal_fetched"
)

// Failure names what a warning or an error is about (Event.Failure), so
// alerts and metrics tell them apart without reading messages.
type Failure string

const (
	// FailureUnreachable: a guest or one of its instances could not be
	// reached (or found); its WAL waits there and the job keeps trying.
	FailureUnreachable Failure = "guest_unreachable"
	// FailureRefused: the guest refused (a requirement of PostgreSQL not
	// met, a host key that changed, no runtime for it): an operator must
	// act.
	FailureRefused Failure = "guest_refused"
	// FailureShip: WAL was not shipped this time (the repository or the
	// guest failed); it stays in the guest and is retried.
	FailureShip Failure = "ship_failed"
	// FailureSplitBrain: a file already stored with other content was
	// kept aside.
	FailureSplitBrain Failure = "split_brain"
	// FailureGap: segments are missing between the newest stored and the
	// ones shipped now.
	FailureGap Failure = "wal_gap"
	// FailureArchiveCommand: PostgreSQL's archive_command failed in the
	// guest since the last interval.
	FailureArchiveCommand Failure = "archive_command_failing"
	// FailureFolderFilling: WAL piles up in the guest's temporary folder
	// while shipping fails; Event.Message says when it is full.
	FailureFolderFilling Failure = "folder_filling"
	// FailureNoRestorePoint: WAL ships with no restore point before it,
	// or a parent session took none of an instance.
	FailureNoRestorePoint Failure = "no_restore_point"
	// FailureSummaryUnknown: the WAL summaries of shipped segments could
	// not be computed (restores to times and names inside are not proven).
	FailureSummaryUnknown Failure = "wal_summary_unknown"
	// FailureShippingPath: WAL lost its way around the host (direct or
	// through the log shipping server) and goes through the host, or, in
	// mode direct, waits.
	FailureShippingPath Failure = "shipping_path"
	// FailureInstanceGone: an instance with restore points no longer runs.
	FailureInstanceGone Failure = "instance_gone"
	// FailureExpiry: retention could not remove everything it should.
	FailureExpiry Failure = "expiry"
	// FailureRuntime: the runtime could not be uninstalled from a guest.
	FailureRuntime Failure = "runtime_uninstall"
)

// Event is what the job tells its observer, for metrics and tests.
type Event struct {
	Kind    EventKind
	Session session.Session // the session concerned, if any
	Machine string
	// Instance is the data directory of the machine's instance concerned,
	// when it has several (Machine.Instances).
	Instance string
	Files    int
	Bytes    int64         // raw WAL bytes shipped
	Lag      time.Duration // how late the batch was stored after its interval was due
	Message  string
	Next     time.Time // EventIdle: when the job wakes next unless a command comes first
	// Direct: EventShippingPath and EventBatchShipped: the WAL goes (went)
	// from the guest to the repository without passing through the host.
	Direct bool
	// Server: with Direct, the log shipping server it goes through
	// (Shipping.Server); empty when the guest connects itself.
	Server string
	// Failure: EventWarning: what it is about.
	Failure Failure
	// RestorePoint and Time: EventRestorePoint and EventDrill: the restore
	// point, and (EventRestorePoint) the time it is consistent as of.
	RestorePoint string
	Time         time.Time
	// Waiting and Free: EventFolder: bytes waiting in the instance's
	// temporary WAL folder, and free on its file system.
	Waiting, Free int64
	// Passed: EventDrill: the drill's checks passed.
	Passed bool
	// Total: EventProgress: the bytes the work will move, 0 when unknown.
	Total int64
}

// instancesNow returns the data directories of m's instances for a
// session: Machine.Instances, or with AllInstances the clusters its guest
// runs now, asked of a runtime deployed for the purpose.
func (j *Job) instancesNow(ctx context.Context, m Machine) ([]string, error) {
	if !m.AllInstances {
		return instancesOf(m), nil
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	rt, err := j.cfg.Guests.Deploy(octx, guest.Target{Machine: m.ID, Address: m.Address})
	if err != nil {
		return nil, fmt.Errorf("find the instances: %w", err)
	}
	defer func() {
		cctx, ccancel := j.op(context.WithoutCancel(ctx))
		defer ccancel()
		if err := rt.Close(cctx); err != nil {
			j.cfg.Logger.Warn("uninstall the runtime that found the instances", "machine", m.ID, "err", err)
		}
	}()
	cl, ok := rt.(guest.ClusterLister)
	if !ok {
		return nil, errors.New("find the instances: the guest's runtime cannot list its clusters")
	}
	clusters, err := cl.Clusters(octx)
	if err != nil {
		return nil, fmt.Errorf("find the instances: %w", err)
	}
	var dirs []string
	for _, c := range clusters {
		if c.Running {
			dirs = append(dirs, c.DataDir)
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("find the instances: no PostgreSQL instance runs on the machine (%d clusters found, none running)", len(clusters))
	}
	return dirs, nil
}

// sameSystemID is the error of an instance (dataDir) whose system
// identifier another instance of its machine (owner) has.
func sameSystemID(dataDir, owner string, sysID uint64) error {
	return fmt.Errorf("%w: %s is a copy of instance %s (system identifier %d): its WAL would mix into that chain; protect one of them",
		ErrSameSystemID, dataDir, owner, sysID)
}

// checkChainOwner refuses the instance dataDir when the chain of its
// system identifier belongs to another of the machine's instances
// (instances): the one its newest restore point was taken of. So of two
// copies the chain's own instance keeps it whichever is reached first; a
// chain whose owner is none of the machine's instances now (its data
// directory moved) goes on with this one.
func (j *Job) checkChainOwner(ctx context.Context, inst repository.Instance, dataDir string, instances []string) error {
	rps, err := repository.RestorePoints(ctx, j.cfg.Repository, inst, j.auth())
	if err != nil || len(rps) == 0 {
		return nil // no chain yet, or the ships that follow report the repository
	}
	owner := rps[len(rps)-1].DataDir
	if owner == "" || owner == dataDir || !slices.Contains(instances, owner) {
		return nil
	}
	return sameSystemID(dataDir, owner, inst.SystemID)
}
