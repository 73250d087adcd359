// Package hypervisortest has a fake hypervisor.Hypervisor for unit tests of
// the code that drives one: machines with in-memory disks, snapshots,
// exports into any repository, restores into memory, and fault injection.
//
// It always exports full images (a Base it is given is ignored, as the
// contract allows), so it says nothing about incremental images; the real
// hypervisors' own tests do.
package hypervisortest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/hypervisor"
)

var (
	_ hypervisor.Hypervisor = (*Fake)(nil)
	_ hypervisor.Fixed      = (*snapshot)(nil)
)

// Op names an operation for fault injection.
type Op string

const (
	OpMachines Op = "machines"
	OpSnapshot Op = "snapshot"
	OpExport   Op = "export"
	OpRestore  Op = "restore"
)

// DiskObject is the name, under an image's prefix, of the fake's one image
// object.
const DiskObject = "disk.img"

// Fake is an in-memory hypervisor. Create it with New.
type Fake struct {
	clock clock.Clock

	mu        sync.Mutex
	machines  []hypervisor.Machine
	disks     map[string][]byte
	held      map[string]bool
	restored  map[string][]byte
	snapshots int
	fault     func(op Op, machine string) error
	live      bool
	incr      bool
}

// New returns a fake with the given machines, each with an empty disk.
func New(clk clock.Clock, machines ...hypervisor.Machine) *Fake {
	f := &Fake{clock: clk, disks: map[string][]byte{}, held: map[string]bool{}, restored: map[string][]byte{}}
	for _, m := range machines {
		f.machines = append(f.machines, m)
		f.disks[m.ID] = nil
	}
	return f
}

// Disk returns a machine's disk content now.
func (f *Fake) Disk(machineID string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.disks[machineID]
	return bytes.Clone(d), ok
}

// SetDisk replaces a machine's disk content.
func (f *Fake) SetDisk(machineID string, data []byte) {
	f.mu.Lock()
	f.disks[machineID] = bytes.Clone(data)
	f.mu.Unlock()
}

// SetIncremental makes images taken with a base of the same machine say
// they are incremental on it. Their content is still the whole disk, so
// restores work as before; it is for tests of chains.
func (f *Fake) SetIncremental(on bool) {
	f.mu.Lock()
	f.incr = on
	f.mu.Unlock()
}

// SetLive makes snapshots say they are read live during Export, as
// hypervisor/physical's are, instead of Fixed at Snapshot.
func (f *Fake) SetLive(live bool) {
	f.mu.Lock()
	f.live = live
	f.mu.Unlock()
}

// SetFault installs f, called before each operation; a non-nil result makes
// the operation fail with it. nil removes the hook.
func (f *Fake) SetFault(fn func(op Op, machine string) error) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

// Snapshots returns how many snapshots were taken.
func (f *Fake) Snapshots() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshots
}

// Restored returns the disk written to target by Restore (it is also in a
// file at target).
func (f *Fake) Restored(target string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.restored[target]
	return d, ok
}

func (f *Fake) inject(ctx context.Context, op Op, machine string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	fn := f.fault
	f.mu.Unlock()
	if fn != nil {
		return fn(op, machine)
	}
	return nil
}

// Machines implements hypervisor.Hypervisor.
func (f *Fake) Machines(ctx context.Context) ([]hypervisor.Machine, error) {
	if err := f.inject(ctx, OpMachines, ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.machines), nil
}

// Snapshot implements hypervisor.Hypervisor.
func (f *Fake) Snapshot(ctx context.Context, machineID string, opts hypervisor.SnapshotOptions) (hypervisor.Snapshot, error) {
	if err := f.inject(ctx, OpSnapshot, machineID); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	disk, ok := f.disks[machineID]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", machineID, hypervisor.ErrNotFound)
	}
	if f.held[machineID] {
		return nil, fmt.Errorf("snapshot %s: %w", machineID, hypervisor.ErrBusy)
	}
	f.held[machineID] = true
	f.snapshots++
	snap := &snapshot{f: f, machine: machineID, taken: f.clock.Now(), disk: bytes.Clone(disk), fixed: !f.live}
	if f.incr && opts.Base != nil && opts.Base.Machine == machineID {
		snap.base = opts.Base.Prefix
	}
	return snap, nil
}

// Restore implements hypervisor.Hypervisor.
func (f *Fake) Restore(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, target string, progress func(hypervisor.Progress)) error {
	if len(chain) == 0 || !chain[0].Full {
		return fmt.Errorf("restore to %s: chain must start with a full image", target)
	}
	last := chain[len(chain)-1] // every fake image is full: the newest wins
	if err := f.inject(ctx, OpRestore, last.Machine); err != nil {
		return err
	}
	if len(last.Objects) != 1 {
		return fmt.Errorf("restore to %s: image has %d objects, want 1", target, len(last.Objects))
	}
	obj := last.Objects[0]
	rc, err := src.Get(ctx, obj.Name, 0, -1)
	if err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore to %s: read %s: %w", target, obj.Name, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != obj.SHA256 {
		return fmt.Errorf("restore to %s: %s: checksum mismatch", target, obj.Name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.restored[target]; ok {
		return fmt.Errorf("restore to %s: target exists", target)
	}
	// The disk also lands in a file at target, as a real disk image
	// would; an existing one is never overwritten.
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	_, err = out.Write(data)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(target)
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	f.restored[target] = data
	if progress != nil {
		progress(hypervisor.Progress{Done: int64(len(data)), Total: int64(len(data))})
	}
	return nil
}

type snapshot struct {
	f        *Fake
	machine  string
	taken    time.Time
	disk     []byte
	once     sync.Once
	exported bool
	fixed    bool
	base     string // the base's prefix when the image says it is incremental
}

func (s *snapshot) Taken() time.Time { return s.taken }

// Fixed implements hypervisor.Fixed: the disk was copied at Snapshot,
// unless the fake was told to act live.
func (s *snapshot) Fixed() bool { return s.fixed }

func (s *snapshot) Export(ctx context.Context, dst hypervisor.ObjectPutter, prefix string, progress func(hypervisor.Progress)) (hypervisor.Image, error) {
	if s.exported {
		return hypervisor.Image{}, fmt.Errorf("export %s: already exported", s.machine)
	}
	s.exported = true
	if err := s.f.inject(ctx, OpExport, s.machine); err != nil {
		return hypervisor.Image{}, err
	}
	name := prefix + "/" + DiskObject
	if err := dst.Put(ctx, name, bytes.NewReader(s.disk)); err != nil {
		return hypervisor.Image{}, fmt.Errorf("export %s: %w", s.machine, err)
	}
	if progress != nil {
		progress(hypervisor.Progress{Done: int64(len(s.disk)), Total: int64(len(s.disk))})
	}
	sum := sha256.Sum256(s.disk)
	return hypervisor.Image{
		Machine: s.machine, Taken: s.taken, Full: s.base == "", Base: s.base, Prefix: prefix,
		Objects: []hypervisor.ImageObject{{Name: name, Size: int64(len(s.disk)), SHA256: hex.EncodeToString(sum[:])}},
	}, nil
}

func (s *snapshot) Release(context.Context) error {
	s.once.Do(func() {
		s.f.mu.Lock()
		delete(s.f.held, s.machine)
		s.f.mu.Unlock()
	})
	return nil
}
