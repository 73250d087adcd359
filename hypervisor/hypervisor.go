package hypervisor

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"
)

// Errors returned (possibly wrapped) by every Hypervisor.
var (
	// ErrNotFound: no machine (or image object) with that id.
	ErrNotFound = errors.New("machine not found")
	// ErrUnsupported: the hypervisor cannot do what was asked, such as
	// quiescing a guest without an agent or exporting changes without a
	// base it recognises. Callers fall back (no quiesce, a full image).
	ErrUnsupported = errors.New("not supported by this hypervisor")
	// ErrBusy: another snapshot of the machine is being held.
	ErrBusy = errors.New("machine busy")
)

// Machine is a computer whose PostgreSQL a job protects.
type Machine struct {
	ID        string // stable id in this hypervisor's inventory
	Name      string // for people
	GuestAddr string // host:port where the guest OS answers SSH; empty when unknown
}

// ObjectPutter is the part of a repository an export writes to;
// repository.Repository satisfies it.
type ObjectPutter interface {
	Put(ctx context.Context, name string, r io.Reader) error
}

// ObjectGetter is the part of a repository a restore reads from;
// repository.Repository satisfies it.
type ObjectGetter interface {
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
}

// ImageObject is one repository object of an image, with the SHA-256 of its
// content (hex) so a restore can verify what it reads.
type ImageObject struct {
	Name   string
	Size   int64
	SHA256 string
}

// Image describes an exported image. Incremental images name the image they
// build on; a restore applies a chain from its full image onwards.
type Image struct {
	Machine string
	Taken   time.Time // the snapshot's point in time
	Full    bool
	Base    string // Prefix of the image this one builds on; empty when Full
	Prefix  string // where its objects live in the repository
	Objects []ImageObject
	// Meta holds what the hypervisor needs to take the next incremental
	// image or to restore, e.g. a dirty bitmap name. Never secrets.
	Meta map[string]string
}

// Progress reports an export or restore under way.
type Progress struct {
	Done, Total int64 // bytes; Total may be 0 when unknown
}

// SnapshotOptions tune Snapshot.
type SnapshotOptions struct {
	// Quiesce freezes the guest's file systems around the snapshot when the
	// hypervisor can; ErrUnsupported when it cannot.
	Quiesce bool
	// Base asks for an image of only what changed since Base; nil, or a
	// base the hypervisor no longer tracks, gives a full image (Image.Full
	// says which was taken).
	Base *Image
	// DataDir picks the PostgreSQL instance an InstanceImager images, by
	// its data directory (guest.Target.DataDir); empty: the one its
	// deployer reaches. Other hypervisors image the whole machine and
	// ignore it.
	DataDir string
}

// InstanceImager is implemented by hypervisors whose images hold one
// PostgreSQL instance (file-level images), chosen by
// SnapshotOptions.DataDir, so a machine with several instances gets an
// image of each. Check with a type assertion. Without it, a machine's
// instances share one image of the whole machine, taken with each of them
// in backup mode (walbackup: Manifest.SharedImage).
type InstanceImager interface {
	// ImagesInstances does nothing: it marks the implementation.
	ImagesInstances()
}

// Hypervisor takes and restores machine images. Methods are safe for
// concurrent use on different machines.
type Hypervisor interface {
	// Machines lists the machines this hypervisor can back up. It reads the
	// inventory and changes nothing, so it is safe to repeat.
	Machines(ctx context.Context) ([]Machine, error)

	// Snapshot fixes a consistent point-in-time image of the machine's
	// disks and returns once that point is fixed, before the image is
	// copied. Unknown machine: ErrNotFound; a snapshot of it still held:
	// ErrBusy. The caller must Release the snapshot. Not idempotent: each
	// call takes a new one.
	Snapshot(ctx context.Context, machineID string, opts SnapshotOptions) (Snapshot, error)

	// Restore writes the image chain (full image first, then each
	// incremental in order) read from src to target, a hypervisor-specific
	// place (a directory, a new disk image). It verifies every object's
	// checksum and fails rather than write a corrupt image. An existing
	// target is never overwritten: that gives an error.
	Restore(ctx context.Context, chain []Image, src ObjectGetter, target string, progress func(Progress)) error
}

// Publisher is implemented by hypervisors that can publish an image chain
// (check with a type assertion): make a disk a machine boots from right
// away, on the chain as it is stored (fetched once, never rewritten into
// one image), with the machine's writes kept in a copy-on-write overlay.
// Everything lives in dir, a new directory: removing it unpublishes. The
// backup is only read.
type Publisher interface {
	// Publish fetches and verifies chain (as Restore does) into dir and
	// returns the disk to boot: the overlay on it. An existing dir is an
	// error matching fs.ErrExist; on error dir is removed.
	Publish(ctx context.Context, chain []Image, src ObjectGetter, dir string, progress func(Progress)) (disk string, err error)
}

// TablespaceRestorer is implemented by hypervisors whose images hold a
// cluster's tablespaces as files under pg_tblspc/<oid> (file-level
// images). PostgreSQL 15 and later refuse to recover a data directory
// whose pg_tblspc holds directories instead of links, so such a
// hypervisor restores each tablespace into a directory of its own outside
// the target and links pg_tblspc/<oid> to it. Check it with a type
// assertion; a hypervisor without it keeps tablespaces inside its image
// (a disk image carries them where they were).
type TablespaceRestorer interface {
	// RestoreTablespaces is Restore that also places the tablespaces: each
	// at opts.Tablespaces[oid] when named there, otherwise at
	// DefaultTablespaceDir(target, oid). Every such directory must not
	// exist (its missing parents are created); an existing one gives an
	// error matching fs.ErrExist before anything is written. On any error
	// everything it wrote, tablespaces and created parents included, is
	// removed. It returns where each tablespace went, by OID.
	RestoreTablespaces(ctx context.Context, chain []Image, src ObjectGetter, target string, opts RestoreOptions) (map[uint32]string, error)
}

// RestoreOptions tune RestoreTablespaces.
type RestoreOptions struct {
	// Tablespaces maps a tablespace's OID to the absolute directory it is
	// restored into. An OID the image does not hold (a tablespace dropped
	// while the image was taken) is ignored.
	Tablespaces map[uint32]string
	// Progress, if set, gets the bytes written and their total.
	Progress func(Progress)
}

// DefaultTablespaceDir is where a restore into target puts tablespace oid
// when told nothing else: beside target, never where the original was, so
// a restore beside a running original cannot touch its files.
func DefaultTablespaceDir(target string, oid uint32) string {
	return target + ".tablespaces/" + strconv.FormatUint(uint64(oid), 10)
}

// Fixed is implemented by snapshots whose point in time is fixed when
// Snapshot returns (a block-level, copy-before-write image): the caller may
// end PostgreSQL's backup mode before Export. A snapshot without it is read
// live during Export (the files of a running cluster), so backup mode must
// last until Export returns. Check it with a type assertion.
type Fixed interface {
	// Fixed reports whether later writes to the machine no longer change
	// the image.
	Fixed() bool
}

// Snapshot is a point-in-time image held by the hypervisor.
type Snapshot interface {
	// Taken is the snapshot's point in time.
	Taken() time.Time

	// Export copies the image into dst under prefix and describes it. It
	// may be called once; progress may be nil. A failed export leaves no
	// Image to refer to (objects already put are garbage the caller may
	// delete).
	Export(ctx context.Context, dst ObjectPutter, prefix string, progress func(Progress)) (Image, error)

	// Release frees what the snapshot holds. Idempotent; safe after a
	// failed Export.
	Release(ctx context.Context) error
}
