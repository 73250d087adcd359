package physical

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository/bundle"
)

var (
	_ hypervisor.Hypervisor     = (*Hypervisor)(nil)
	_ hypervisor.InstanceImager = (*Hypervisor)(nil)
)

// ImagesInstances implements hypervisor.InstanceImager: an image holds the
// files of the instance SnapshotOptions.DataDir names.
func (h *Hypervisor) ImagesInstances() {}

// Errors of this package, returned wrapped.
var (
	// ErrBrokenChain: the images given to Restore do not form a chain (a
	// full image, then incrementals each built on the one before), or an
	// index refers to an image outside it.
	ErrBrokenChain = errors.New("broken image chain")
	// ErrChecksum: content differs from the SHA-256 recorded for it, either
	// between the guest and the bundle being written, or between an object
	// or file read back and its index or image.
	ErrChecksum = errors.New("checksum mismatch")
)

// Names of an image's objects under its prefix, and the Meta value that
// marks an image of this package.
const (
	FilesObject = "files.bundle" // bundle of the file contents the image stores
	IndexObject = "index.bundle" // bundle holding one file, IndexFile
	IndexFile   = "index.json"   // the index, inside IndexObject
	Format      = "pglogship-physical-1"
	// MetaFormat is the Image.Meta key whose value is Format.
	MetaFormat = "format"
)

// Machine is a host whose PostgreSQL cluster is imaged file by file.
type Machine struct {
	ID      string // stable id, unique in Config.Machines
	Name    string // for people
	Address string // host:port of the guest's SSH server, passed to the deployer; empty for a local one
}

// Config configures New.
type Config struct {
	// Machines are the machines this hypervisor serves; IDs must be
	// non-empty and unique.
	Machines []Machine
	// Guests deploys the runtime that streams the files; required. Its
	// runtimes must implement guest.DataFiles.
	Guests guest.Deployer
	// Key encrypts the image's bundles when set; it is never stored.
	// Restore needs the same key.
	Key *bundle.Key
	// Clock stamps snapshots; nil means the real clock.
	Clock clock.Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Hypervisor takes file-level images of PostgreSQL clusters. Safe for
// concurrent use; one snapshot per machine at a time.
type Hypervisor struct {
	cfg      Config
	machines map[string]Machine

	mu   sync.Mutex
	held map[string]bool
}

// New checks cfg, fills its defaults and returns a Hypervisor.
func New(cfg Config) (*Hypervisor, error) {
	if cfg.Guests == nil {
		return nil, errors.New("physical hypervisor: a guest deployer is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hypervisor{machines: map[string]Machine{}, held: map[string]bool{}}
	for _, m := range cfg.Machines {
		if m.ID == "" {
			return nil, errors.New("physical hypervisor: a machine has no id")
		}
		if _, dup := h.machines[m.ID]; dup {
			return nil, fmt.Errorf("physical hypervisor: machine id %q appears twice", m.ID)
		}
		h.machines[m.ID] = m
	}
	cfg.Machines = append([]Machine(nil), cfg.Machines...)
	h.cfg = cfg
	return h, nil
}

// Machines implements hypervisor.Hypervisor: the configured machines, in
// configuration order. It reaches no guest and never fails.
func (h *Hypervisor) Machines(ctx context.Context) ([]hypervisor.Machine, error) {
	out := make([]hypervisor.Machine, len(h.cfg.Machines))
	for i, m := range h.cfg.Machines {
		out[i] = hypervisor.Machine{ID: m.ID, Name: m.Name, GuestAddr: m.Address}
	}
	return out, nil
}

// Snapshot implements hypervisor.Hypervisor. It deploys a runtime into the
// machine's guest and returns a snapshot holding it; no file is read yet.
// Unknown machine: hypervisor.ErrNotFound; a snapshot of it still held:
// hypervisor.ErrBusy; opts.Quiesce, or a runtime that cannot stream data
// files: hypervisor.ErrUnsupported. opts.Base, when it is an image of this
// hypervisor for the same machine, makes Export incremental. Not
// idempotent: each call deploys a runtime, which Release removes.
func (h *Hypervisor) Snapshot(ctx context.Context, machineID string, opts hypervisor.SnapshotOptions) (hypervisor.Snapshot, error) {
	m, ok := h.machines[machineID]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", machineID, hypervisor.ErrNotFound)
	}
	if opts.Quiesce {
		return nil, fmt.Errorf("snapshot %s: quiesce: %w", machineID, hypervisor.ErrUnsupported)
	}
	h.mu.Lock()
	if h.held[machineID] {
		h.mu.Unlock()
		return nil, fmt.Errorf("snapshot %s: %w", machineID, hypervisor.ErrBusy)
	}
	h.held[machineID] = true
	h.mu.Unlock()

	rt, err := h.cfg.Guests.Deploy(ctx, guest.Target{Machine: m.ID, Address: m.Address, DataDir: opts.DataDir})
	if err != nil {
		h.unhold(machineID)
		return nil, fmt.Errorf("snapshot %s: %w", machineID, err)
	}
	df, ok := rt.(guest.DataFiles)
	if !ok {
		err := rt.Close(ctx)
		h.unhold(machineID)
		return nil, errors.Join(fmt.Errorf("snapshot %s: runtime cannot stream data files: %w", machineID, hypervisor.ErrUnsupported), err)
	}
	s := &snapshot{h: h, machine: machineID, rt: rt, files: df, taken: h.cfg.Clock.Now()}
	if opts.Base != nil {
		base := *opts.Base
		s.base = &base
	}
	return s, nil
}

func (h *Hypervisor) unhold(machineID string) {
	h.mu.Lock()
	delete(h.held, machineID)
	h.mu.Unlock()
}

// snapshot holds a deployed runtime until Release.
type snapshot struct {
	h       *Hypervisor
	machine string
	rt      guest.Runtime
	files   guest.DataFiles
	taken   time.Time
	base    *hypervisor.Image

	mu       sync.Mutex
	exported bool
	released bool
	closeErr error
}

// Taken implements hypervisor.Snapshot: when Snapshot was called. The files
// themselves are read during Export.
func (s *snapshot) Taken() time.Time { return s.taken }

// Release implements hypervisor.Snapshot: it closes the runtime (which
// uninstalls it) and frees the machine for the next snapshot. Idempotent:
// later calls return what the first returned. It waits for an Export under
// way to finish.
func (s *snapshot) Release(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return s.closeErr
	}
	s.released = true
	if err := s.rt.Close(ctx); err != nil {
		s.closeErr = fmt.Errorf("release snapshot of %s: %w", s.machine, err)
	}
	s.h.unhold(s.machine)
	return s.closeErr
}
