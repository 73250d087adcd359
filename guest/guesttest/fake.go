// Package guesttest has a fake guest.Deployer for unit tests of the code
// that drives one: guests held in memory, with WAL files a test adds, a
// count of runtimes deployed and still installed, and fault injection.
//
// Frames are not compressed (guest.CodecNone). Its runtimes implement
// guest.Recoverer without a PostgreSQL: Recover records its configuration
// and asks fetch for the names a test set (SetRecovery). The shipping and
// recovery paths are proven on the real runtime with real PostgreSQL; this
// fake is for orchestration and failures only.
package guesttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

var (
	_ guest.Deployer      = (*Deployer)(nil)
	_ guest.Runtime       = (*runtime)(nil)
	_ guest.SpaceReporter = (*runtime)(nil)
	_ guest.BackupMode    = (*runtime)(nil)
)

// Op names an operation for fault injection.
type Op string

const (
	OpDeploy  Op = "deploy"
	OpScan    Op = "scan"
	OpPrepare Op = "prepare"
	OpReady   Op = "ready"
	OpRead    Op = "read"
	OpRemove  Op = "remove"
	OpClose   Op = "close"
	// OpBackupStart and OpBackupStop are backup mode (guest.BackupMode).
	OpBackupStart Op = "backup_start"
	OpBackupStop  Op = "backup_stop"
)

// ArchiveCommand is what the fake's PrepareArchive sets archive_command to.
const ArchiveCommand = "guesttest-archive %p %f"

// Guest is one fake guest OS with a PostgreSQL instance.
type Guest struct {
	mu        sync.Mutex
	recovery  recoveryState // see recover.go
	inst      guest.Instance
	wal       map[string][]byte
	installed int
	deploys   int
	archive   guest.ArchiveConfig
	free      int64
	fault     func(op Op, name string) error
	highest   wal.FileName      // newest segment ever archived
	archived  map[string][]byte // every file ever archived, by name
	backups   int               // backups started and not stopped
	killed    int               // runtimes deployed before this generation are dead
}

// NewGuest returns a guest whose PostgreSQL is inst, with 1 GiB free in
// its temporary folder.
func NewGuest(inst guest.Instance) *Guest {
	return &Guest{inst: inst, wal: map[string][]byte{}, archived: map[string][]byte{}, free: 1 << 30}
}

// SetFree sets the free space FolderSpace reports; waiting WAL does not
// reduce it, so tests control it exactly.
func (g *Guest) SetFree(n int64) {
	g.mu.Lock()
	g.free = n
	g.mu.Unlock()
}

// AddWAL puts a file into the temporary folder, as archive_command would.
func (g *Guest) AddWAL(name string, data []byte) {
	g.mu.Lock()
	g.addLocked(name, data)
	g.mu.Unlock()
}

func (g *Guest) addLocked(name string, data []byte) {
	g.wal[name] = bytes.Clone(data)
	g.archived[name] = g.wal[name]
	if f, err := wal.ParseFileName(name); err == nil && f.Kind == wal.Segment && f.String() > g.highest.String() {
		g.highest = f
	}
}

// SwitchWAL archives the segment after the newest one ever archived (on
// the instance's timeline, 1 if unset), as pg_switch_wal and
// archive_command would, and returns its name.
func (g *Guest) SwitchWAL(data []byte) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	name := g.nextLocked().String()
	g.addLocked(name, data)
	return name
}

func (g *Guest) nextLocked() wal.FileName {
	if g.highest.Timeline == 0 {
		tli := g.inst.Timeline
		if tli == 0 {
			tli = 1
		}
		return wal.FileName{Kind: wal.Segment, Timeline: tli, Log: 0, Seg: 1}
	}
	return g.highest.Next(g.segSize())
}

func (g *Guest) segSize() int64 {
	if g.inst.WALSegmentSize > 0 {
		return g.inst.WALSegmentSize
	}
	return 16 << 20
}

// Archived returns every file ever put into the temporary folder (by
// AddWAL, SwitchWAL or backup mode), with the content it was last given:
// what a repository must hold once all is shipped.
func (g *Guest) Archived() map[string][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string][]byte, len(g.archived))
	for n, d := range g.archived {
		out[n] = bytes.Clone(d)
	}
	return out
}

// BackupsRunning returns how many backups are in backup mode.
func (g *Guest) BackupsRunning() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.backups
}

// Waiting returns the names of the files in the temporary folder, sorted.
func (g *Guest) Waiting() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, 0, len(g.wal))
	for n := range g.wal {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Installed returns how many runtimes are deployed and not yet closed.
func (g *Guest) Installed() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.installed
}

// Deploys returns how many runtimes were ever deployed.
func (g *Guest) Deploys() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.deploys
}

// Instance returns the instance as PrepareArchive left it.
// ArchiveConfig is what the last PrepareArchive set up.
func (g *Guest) ArchiveConfig() guest.ArchiveConfig {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.archive
}

func (g *Guest) Instance() guest.Instance {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inst
}

// ErrHang, returned by a fault hook, makes the operation hang until its
// context ends, as a guest that stopped answering does.
var ErrHang = errors.New("guesttest: hang")

// SetFault installs fn, called before each operation with the operation and
// the file name (or machine id for deploy); a non-nil result makes it fail,
// or hang when it is ErrHang. nil removes the hook.
func (g *Guest) SetFault(fn func(op Op, name string) error) {
	g.mu.Lock()
	g.fault = fn
	g.mu.Unlock()
}

func (g *Guest) inject(ctx context.Context, op Op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	fn := g.fault
	g.mu.Unlock()
	if fn == nil {
		return nil
	}
	err := fn(op, name)
	if errors.Is(err, ErrHang) {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

// Deployer deploys into fake guests, found by machine id, or, for a
// Target naming a data directory, by InstanceKey.
type Deployer struct {
	mu     sync.Mutex
	guests map[string]*Guest
}

// NewDeployer returns a deployer for the given guests, keyed by machine id
// or by InstanceKey for one of several instances of a machine. The map is
// the deployer's from then on: Set changes it.
func NewDeployer(guests map[string]*Guest) *Deployer {
	return &Deployer{guests: guests}
}

// InstanceKey is the key of a machine's instance among a Deployer's
// guests: a Target with that machine and DataDir deploys into it.
func InstanceKey(machine, dataDir string) string { return machine + " " + dataDir }

// Set puts g under key, or removes the guest there when g is nil: an
// instance that starts or stops.
func (d *Deployer) Set(key string, g *Guest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if g == nil {
		delete(d.guests, key)
		return
	}
	d.guests[key] = g
}

// find returns the guest a Target deploys into: by InstanceKey when it
// names a data directory, else by machine id, else the machine's first
// instance (the one a deployer's own connection settings would reach).
func (d *Deployer) find(t guest.Target) (*Guest, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.DataDir != "" {
		if g, ok := d.guests[InstanceKey(t.Machine, t.DataDir)]; ok {
			return g, nil
		}
		return nil, fmt.Errorf("deploy to %s: instance %s: %w", t.Machine, t.DataDir, guest.ErrNoInstance)
	}
	if g, ok := d.guests[t.Machine]; ok {
		return g, nil
	}
	if keys := d.instanceKeys(t.Machine); len(keys) > 0 {
		return d.guests[keys[0]], nil
	}
	return nil, fmt.Errorf("deploy to %s: no such fake guest", t.Machine)
}

// instanceKeys lists the InstanceKeys of machine's guests, sorted; d.mu
// held.
func (d *Deployer) instanceKeys(machine string) []string {
	var keys []string
	for k := range d.guests {
		if strings.HasPrefix(k, InstanceKey(machine, "")) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Deploy implements guest.Deployer.
func (d *Deployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	g, err := d.find(t)
	if err != nil {
		return nil, err
	}
	if err := g.inject(ctx, OpDeploy, t.Machine); err != nil {
		return nil, fmt.Errorf("deploy to %s: %w", t.Machine, err)
	}
	g.mu.Lock()
	g.installed++
	g.deploys++
	g.mu.Unlock()
	return &runtime{g: g, gen: g.killed, d: d, machine: t.Machine}, nil
}

// Clusters implements guest.ClusterLister: the machine's instances under
// their InstanceKeys, each running, with its guest's release.
func (r *runtime) Clusters(ctx context.Context) ([]guest.Cluster, error) {
	if err := r.enter(ctx, OpScan, ""); err != nil {
		return nil, err
	}
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	var out []guest.Cluster
	for _, k := range r.d.instanceKeys(r.machine) {
		g := r.d.guests[k]
		g.mu.Lock()
		major := g.inst.Version / 10000
		g.mu.Unlock()
		out = append(out, guest.Cluster{DataDir: strings.TrimPrefix(k, InstanceKey(r.machine, "")), Major: major, Running: true})
	}
	return out, nil
}

type runtime struct {
	g       *Guest
	d       *Deployer
	machine string
	gen     int // the guest's kill generation when deployed
	mu      sync.Mutex
	closed  bool
	backup  *fakeBackup // backup mode held by this runtime
}

// ErrKilled is what the runtimes of a guest return after KillRuntimes.
var ErrKilled = errors.New("guesttest: runtime connection broken: the runtime was killed")

// KillRuntimes kills every runtime deployed so far, as a guest that
// rebooted or an operator's kill does: their calls fail with ErrKilled
// (Close too), while new deployments work.
func (g *Guest) KillRuntimes() {
	g.mu.Lock()
	g.killed++
	g.installed = 0
	g.mu.Unlock()
}

func (r *runtime) enter(ctx context.Context, op Op, name string) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return guest.ErrClosed
	}
	r.g.mu.Lock()
	dead := r.gen < r.g.killed
	r.g.mu.Unlock()
	if dead {
		return ErrKilled
	}
	return r.g.inject(ctx, op, name)
}

func (r *runtime) Scan(ctx context.Context) (guest.Instance, error) {
	if err := r.enter(ctx, OpScan, ""); err != nil {
		return guest.Instance{}, err
	}
	return r.g.Instance(), nil
}

func (r *runtime) PrepareArchive(ctx context.Context, cfg guest.ArchiveConfig) error {
	if err := r.enter(ctx, OpPrepare, cfg.Dir); err != nil {
		return err
	}
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	err := guest.CheckRequirements(r.g.inst, func(cmd string) bool { return cmd == ArchiveCommand })
	if err != nil {
		return err
	}
	r.g.inst.ArchiveCommand = ArchiveCommand
	r.g.archive = cfg
	return nil
}

func (r *runtime) Ready(ctx context.Context) ([]guest.File, error) {
	if err := r.enter(ctx, OpReady, ""); err != nil {
		return nil, err
	}
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	files := make([]guest.File, 0, len(r.g.wal))
	for n, d := range r.g.wal {
		files = append(files, guest.File{Name: n, Size: int64(len(d))})
	}
	slices.SortFunc(files, func(a, b guest.File) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

func (r *runtime) Read(ctx context.Context, names []string, fn func(guest.Frame) error) error {
	for _, n := range names {
		if err := r.enter(ctx, OpRead, n); err != nil {
			return err
		}
		r.g.mu.Lock()
		data, ok := r.g.wal[n]
		r.g.mu.Unlock()
		if !ok {
			return fmt.Errorf("read %s: not in the temporary folder", n)
		}
		if err := fn(rawFrame(n, data)); err != nil {
			return err
		}
	}
	return nil
}

// rawFrame is a file's frame as the fakes send it: not compressed, with
// its checksum (of WAL, as the runtime sums it) known from the start.
func rawFrame(name string, data []byte) guest.Frame {
	size, sum := int64(len(data)), checksum.Of(checksum.XXH3, data)
	return guest.Frame{Name: name, Codec: guest.CodecNone, Data: bytes.NewReader(data),
		Checksum: func() (int64, checksum.Sum) { return size, sum }}
}

func (r *runtime) Remove(ctx context.Context, names []string) error {
	for _, n := range names {
		if err := r.enter(ctx, OpRemove, n); err != nil {
			return err
		}
		r.g.mu.Lock()
		delete(r.g.wal, n)
		r.g.mu.Unlock()
	}
	return nil
}

func (r *runtime) FolderSpace(ctx context.Context) (guest.Space, error) {
	if err := r.enter(ctx, OpReady, ""); err != nil {
		return guest.Space{}, err
	}
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	sp := guest.Space{Free: r.g.free}
	for _, d := range r.g.wal {
		sp.Waiting += int64(len(d))
	}
	return sp, nil
}

// StartBackup implements guest.BackupMode: the backup starts just inside
// the next segment to be archived.
func (r *runtime) StartBackup(ctx context.Context, label string) (guest.BackupStart, error) {
	if err := r.enter(ctx, OpBackupStart, label); err != nil {
		return guest.BackupStart{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.backup != nil {
		return guest.BackupStart{}, fmt.Errorf("start backup: a backup is already running in this session")
	}
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	next := r.g.nextLocked()
	r.backup = &fakeBackup{label: label, seg: next, start: next.StartLSN(r.g.segSize()) + 0x28}
	r.g.backups++
	return guest.BackupStart{LSN: r.backup.start, Timeline: next.Timeline}, nil
}

// StopBackup implements guest.BackupMode: like pg_backup_stop it switches
// WAL, so the segment holding the backup and the backup history file are
// archived before it returns.
func (r *runtime) StopBackup(ctx context.Context) (guest.BackupStop, error) {
	if err := r.enter(ctx, OpBackupStop, ""); err != nil {
		return guest.BackupStop{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.backup
	if b == nil {
		return guest.BackupStop{}, fmt.Errorf("stop backup: no backup is running in this session")
	}
	r.backup = nil
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	r.g.backups--
	stop := b.start + 0x100
	r.g.addLocked(b.seg.String(), Segment(b.seg, r.g.segSize(), r.g.inst.SystemID, r.g.version(), []byte("fake segment archived by pg_backup_stop of "+b.label)))
	history := wal.FileName{Kind: wal.Backup, Timeline: b.seg.Timeline, Log: b.seg.Log, Seg: b.seg.Seg,
		Offset: uint32(uint64(b.start) % uint64(r.g.segSize()))}
	r.g.addLocked(history.String(), []byte(fmt.Sprintf("START WAL LOCATION: %s\nSTOP WAL LOCATION: %s\nLABEL: %s\n", b.start, stop, b.label)))
	return guest.BackupStop{LSN: stop, BackupLabel: fmt.Sprintf(
		"START WAL LOCATION: %s (file %s)\nCHECKPOINT LOCATION: %s\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nLABEL: %s\nSTART TIMELINE: %d\n",
		b.start, b.seg, b.start, b.label, b.seg.Timeline)}, nil
}

type fakeBackup struct {
	label string
	seg   wal.FileName
	start wal.LSN
}

func (r *runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if err := r.g.inject(ctx, OpClose, ""); err != nil {
		return err
	}
	r.closed = true
	r.g.mu.Lock()
	if r.gen < r.g.killed { // already counted out by KillRuntimes
		r.g.mu.Unlock()
		return ErrKilled
	}
	r.g.installed--
	if r.backup != nil { // PostgreSQL ends a backup whose session ends
		r.g.backups--
		r.backup = nil
	}
	r.g.mu.Unlock()
	return nil
}
