package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/qemu/qmp"
	"github.com/pglogship/pglogship/repository/bundle"
)

var _ hypervisor.Hypervisor = (*Hypervisor)(nil)

// Defaults for Config and VM.
const (
	DefaultNode              = "disk0"
	DefaultQemuImg           = "qemu-img"
	DefaultGuestAgentTimeout = 30 * time.Second
)

// Keys of Image.Meta, and the values this package writes.
const (
	MetaFormat      = "format"       // FormatQcow2
	MetaCompression = "compression"  // CompressionZstd
	MetaNode        = "node"         // the QMP node the image was taken of
	MetaBitmap      = "bitmap"       // the dirty bitmap that counts changes since this image
	MetaVirtualSize = "virtual-size" // the disk's size in bytes
	// MetaDirtyBytes is, for an incremental image, how many bytes the
	// base's bitmap marked changed: what the job copied.
	MetaDirtyBytes = "dirty-bytes"

	// MetaSealed is SealedBundle for an image written with Config.Key:
	// its object is a sealed bundle, not a zstd stream.
	MetaSealed = "sealed"

	FormatQcow2     = "qcow2"
	CompressionZstd = "zstd"
	SealedBundle    = "bundle"
)

// ObjectName is the name, under an image's prefix, of its one object;
// SealedObjectName that of an image written with Config.Key, a bundle
// (repository/bundle) that holds the qcow2 file as SealedFile.
const (
	ObjectName       = "disk.qcow2.zst"
	SealedObjectName = "disk.qcow2.bundle"
	SealedFile       = "disk.qcow2"
)

// bitmapPrefix starts the name of every dirty bitmap this package adds.
const bitmapPrefix = "pglogship-"

// cleanupTimeout bounds clean-up steps that run after the caller's ctx
// ended (thaw, removing a half-made snapshot).
const cleanupTimeout = 30 * time.Second

// ErrCorrupt: an image object read back does not have the size and
// SHA-256 its Image records.
var ErrCorrupt = errors.New("image object corrupt")

// ErrUnsafeImage: a qcow2 file read from the repository is not one this
// package writes: its header names a backing file, an external data file
// or an encryption of its own, or it is not qcow2 at all. qemu-img would
// open what such a header names, so it never sees the file.
var ErrUnsafeImage = errors.New("image refused: not a plain qcow2 file of this hypervisor")

// VM is a QEMU virtual machine to protect.
type VM struct {
	ID   string // required, unique
	Name string // for people; default ID
	// QMPSocket is the unix socket of a QMP monitor (-qmp
	// unix:PATH,server=on,wait=off) this package may use. Required. QEMU
	// serves one client per monitor: when a manager such as libvirt holds
	// one, give QEMU another for pglogship.
	QMPSocket string
	// GuestAgentSocket is the unix socket QEMU binds the guest agent's
	// virtio-serial port (org.qemu.guest_agent.0) to; optional.
	// SnapshotOptions.Quiesce needs it and gives hypervisor.ErrUnsupported
	// without it.
	GuestAgentSocket string
	SSHAddr          string // the guest's SSH host:port, reported as Machine.GuestAddr
	// Node is the QMP node-name of the disk's qcow2 format node, the one
	// backed up (-blockdev node-name=disk0,driver=qcow2,...); default
	// DefaultNode. Persistent dirty bitmaps need qcow2.
	Node string
}

// Config configures a Hypervisor.
type Config struct {
	VMs []VM
	// WorkDir holds the temporary backup targets and restore chains; it
	// must be on this host and readable and writable by the QEMU
	// processes. Created (0700) if missing. Required.
	WorkDir string
	QemuImg string // the qemu-img program; default DefaultQemuImg
	// JobSpeed limits each backup job to so many bytes per second; 0 means
	// no limit.
	JobSpeed int64
	// GuestAgentTimeout bounds each guest agent call (connect, freeze,
	// thaw); default DefaultGuestAgentTimeout.
	GuestAgentTimeout time.Duration
	// Key, when set, seals every image written (compressed, encrypted and
	// authenticated, bound to its object name; repository/bundle) and
	// makes Restore refuse an image that is not sealed with it. It is never
	// stored.
	Key    *bundle.Key
	Clock  clock.Clock  // default clock.New()
	Logger *slog.Logger // default slog.Default()
}

// Hypervisor backs up and restores QEMU VMs. Create it with New. Its
// methods are safe for concurrent use; one snapshot per machine is held at
// a time.
type Hypervisor struct {
	cfg Config
	vms map[string]VM

	mu   sync.Mutex
	held map[string]bool // machines with a snapshot not yet released
}

// New checks cfg, fills its defaults and creates WorkDir. It does not
// connect to any VM.
func New(cfg Config) (*Hypervisor, error) {
	cfg.VMs = slices.Clone(cfg.VMs)
	if cfg.QemuImg == "" {
		cfg.QemuImg = DefaultQemuImg
	}
	if cfg.GuestAgentTimeout == 0 {
		cfg.GuestAgentTimeout = DefaultGuestAgentTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.WorkDir == "":
		return nil, errors.New("qemu hypervisor: WorkDir is required")
	case cfg.JobSpeed < 0 || cfg.GuestAgentTimeout < 0:
		return nil, errors.New("qemu hypervisor: JobSpeed and GuestAgentTimeout must not be negative")
	}
	h := &Hypervisor{vms: map[string]VM{}, held: map[string]bool{}}
	for i := range cfg.VMs {
		vm := &cfg.VMs[i]
		if vm.Name == "" {
			vm.Name = vm.ID
		}
		if vm.Node == "" {
			vm.Node = DefaultNode
		}
		switch _, dup := h.vms[vm.ID]; {
		case vm.ID == "" || dup:
			return nil, fmt.Errorf("qemu hypervisor: VM id %q: empty or repeated", vm.ID)
		case vm.QMPSocket == "":
			return nil, fmt.Errorf("qemu hypervisor: VM %s: QMPSocket is required", vm.ID)
		}
		h.vms[vm.ID] = *vm
	}
	dir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("qemu hypervisor: %w", err)
	}
	cfg.WorkDir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu hypervisor: %w", err)
	}
	h.cfg = cfg
	return h, nil
}

// Machines returns the configured VMs, in Config order. It does not
// contact QEMU, so it never fails.
func (h *Hypervisor) Machines(ctx context.Context) ([]hypervisor.Machine, error) {
	ms := make([]hypervisor.Machine, 0, len(h.cfg.VMs))
	for _, vm := range h.cfg.VMs {
		ms = append(ms, hypervisor.Machine{ID: vm.ID, Name: vm.Name, GuestAddr: vm.SSHAddr})
	}
	return ms, nil
}

// Snapshot fixes a point-in-time image of the VM's disk node and returns
// once the backup job has started; Export copies it. It takes an
// incremental image when opts.Base is the newest exported image of this
// VM's node and its dirty bitmap is intact, else a full image. Errors:
// hypervisor.ErrNotFound for an unknown machine, hypervisor.ErrBusy while
// a snapshot of it is held, hypervisor.ErrUnsupported for Quiesce without
// a guest agent socket, *qmp.Error when QEMU refuses a step (with its
// message). A failed Snapshot leaves the guest thawed and nothing behind
// in QEMU or WorkDir, unless that clean-up fails too (the error says so).
// Not idempotent: each call takes a new snapshot.
func (h *Hypervisor) Snapshot(ctx context.Context, machineID string, opts hypervisor.SnapshotOptions) (hypervisor.Snapshot, error) {
	vm, ok := h.vms[machineID]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", machineID, hypervisor.ErrNotFound)
	}
	if opts.Quiesce && vm.GuestAgentSocket == "" {
		return nil, fmt.Errorf("snapshot %s: quiesce without a guest agent socket: %w", machineID, hypervisor.ErrUnsupported)
	}
	h.mu.Lock()
	if h.held[vm.ID] {
		h.mu.Unlock()
		return nil, fmt.Errorf("snapshot %s: %w", machineID, hypervisor.ErrBusy)
	}
	h.held[vm.ID] = true
	h.mu.Unlock()

	s, err := h.snapshot(ctx, vm, opts)
	if err != nil {
		h.unhold(vm.ID)
		return nil, fmt.Errorf("snapshot %s: %w", machineID, err)
	}
	return s, nil
}

func (h *Hypervisor) unhold(id string) {
	h.mu.Lock()
	delete(h.held, id)
	h.mu.Unlock()
}

func (h *Hypervisor) snapshot(ctx context.Context, vm VM, opts hypervisor.SnapshotOptions) (_ *snapshot, err error) {
	c, err := qmp.Dial(ctx, vm.QMPSocket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	node, err := queryNode(ctx, c, vm.Node)
	if err != nil {
		return nil, err
	}
	token := randomToken()
	s := &snapshot{
		h:      h,
		vm:     vm,
		full:   true,
		size:   node.Image.VirtualSize,
		bitmap: bitmapPrefix + token,
		job:    "pgls-job-" + token,
		target: "pgls-" + token, // node names are at most 31 bytes
		path:   filepath.Join(h.cfg.WorkDir, bitmapPrefix+token+".qcow2"),
	}
	if base, why := h.usableBase(vm, node, opts.Base); base != "" {
		s.full, s.baseBitmap, s.basePrefix = false, base, opts.Base.Prefix
	} else if opts.Base != nil {
		h.cfg.Logger.Info("full image instead of incremental", "vm", vm.ID, "base", opts.Base.Prefix, "reason", why)
	}
	// From here on, a failure undoes what was done.
	defer func() {
		if err != nil {
			cctx, cancel := clock.WithTimeout(h.cfg.Clock, context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if rerr := s.release(cctx, c); rerr != nil {
				err = fmt.Errorf("%w (clean-up: %v)", err, rerr)
			}
		}
	}()

	if err := h.qemuImg(ctx, "create", "-q", "-f", FormatQcow2, s.path, strconv.FormatInt(s.size, 10)); err != nil {
		return nil, err
	}
	s.created = true
	err = c.Execute(ctx, "blockdev-add", map[string]any{
		"driver":    FormatQcow2,
		"node-name": s.target,
		"file":      map[string]any{"driver": "file", "filename": s.path},
	}, nil)
	if err != nil {
		return nil, err
	}
	s.attached = true

	backup := map[string]any{
		"job-id": s.job, "device": vm.Node, "target": s.target,
		"sync": "full", "auto-dismiss": false,
	}
	if !s.full {
		backup["sync"], backup["bitmap"], backup["bitmap-mode"] = "bitmap", s.baseBitmap, "never"
	}
	if h.cfg.JobSpeed > 0 {
		backup["speed"] = h.cfg.JobSpeed
	}
	actions := []map[string]any{
		{"type": "block-dirty-bitmap-add", "data": map[string]any{"node": vm.Node, "name": s.bitmap, "persistent": true}},
		{"type": "blockdev-backup", "data": backup},
	}

	var thaw func() error
	if opts.Quiesce {
		if thaw, err = h.freeze(ctx, vm); err != nil {
			return nil, err
		}
	}
	terr := c.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil)
	if terr == nil {
		s.taken = h.cfg.Clock.Now()
		s.started = true
	}
	if thaw != nil {
		if err := thaw(); err != nil {
			return nil, errors.Join(terr, err)
		}
	}
	if terr != nil {
		return nil, terr
	}
	if !s.full {
		// The base's bitmap is frozen while the job runs: its count is
		// what the job copies.
		if n, err := queryNode(ctx, c, vm.Node); err == nil {
			if bm, ok := n.bitmap(s.baseBitmap); ok {
				s.dirty = bm.Count
			}
		}
	}
	h.cfg.Logger.Info("snapshot taken", "vm", vm.ID, "full", s.full, "job", s.job, "bitmap", s.bitmap, "dirty_bytes", s.dirty)
	return s, nil
}

// usableBase returns the dirty bitmap to take an incremental image from
// base with, or "" and why there is none.
func (h *Hypervisor) usableBase(vm VM, node blockNode, base *hypervisor.Image) (bitmap, why string) {
	if base == nil {
		return "", "no base"
	}
	name := base.Meta[MetaBitmap]
	bm, found := node.bitmap(name)
	switch {
	case base.Machine != vm.ID:
		return "", "base is an image of machine " + base.Machine
	case base.Meta[MetaFormat] != FormatQcow2 || base.Meta[MetaNode] != vm.Node:
		return "", "base is not a qcow2 image of node " + vm.Node
	case base.Meta[MetaVirtualSize] != strconv.FormatInt(node.Image.VirtualSize, 10):
		return "", "disk size changed"
	case !strings.HasPrefix(name, bitmapPrefix) || !found:
		return "", "the base's dirty bitmap is gone"
	case bm.Inconsistent || !bm.Recording || bm.Busy:
		return "", "the base's dirty bitmap is inconsistent, disabled or busy"
	}
	return name, ""
}

// freeze freezes the guest's file systems and returns the function that
// thaws them; the thaw runs even when ctx has ended by then.
func (h *Hypervisor) freeze(ctx context.Context, vm VM) (thaw func() error, err error) {
	actx, cancel := clock.WithTimeout(h.cfg.Clock, ctx, h.cfg.GuestAgentTimeout)
	defer cancel()
	a, err := qmp.DialAgent(actx, vm.GuestAgentSocket)
	if err != nil {
		return nil, err
	}
	thaw = func() error {
		tctx, cancel := clock.WithTimeout(h.cfg.Clock, context.WithoutCancel(ctx), h.cfg.GuestAgentTimeout)
		defer cancel()
		_, err := a.ThawFilesystems(tctx)
		a.Close()
		if err != nil {
			// One retry on a fresh connection: the first may have been
			// cut off while the agent was still freezing.
			if b, derr := qmp.DialAgent(tctx, vm.GuestAgentSocket); derr == nil {
				_, err = b.ThawFilesystems(tctx)
				b.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("thaw guest file systems: %w", err)
		}
		return nil
	}
	n, err := a.FreezeFilesystems(actx)
	if err != nil {
		// The agent may have frozen some file systems before it failed.
		return nil, errors.Join(fmt.Errorf("freeze guest file systems: %w", err), thaw())
	}
	h.cfg.Logger.Debug("guest file systems frozen", "vm", vm.ID, "count", n)
	return thaw, nil
}

// blockNode is the part of query-named-block-nodes this package reads.
type blockNode struct {
	NodeName string `json:"node-name"`
	Drv      string `json:"drv"`
	Image    struct {
		VirtualSize int64 `json:"virtual-size"`
	} `json:"image"`
	DirtyBitmaps []dirtyBitmap `json:"dirty-bitmaps"`
}

type dirtyBitmap struct {
	Name         string `json:"name"`
	Count        int64  `json:"count"` // dirty bytes
	Granularity  int64  `json:"granularity"`
	Recording    bool   `json:"recording"`
	Busy         bool   `json:"busy"`
	Persistent   bool   `json:"persistent"`
	Inconsistent bool   `json:"inconsistent"`
}

func (n blockNode) bitmap(name string) (dirtyBitmap, bool) {
	for _, bm := range n.DirtyBitmaps {
		if name != "" && bm.Name == name {
			return bm, true
		}
	}
	return dirtyBitmap{}, false
}

// queryNodes returns QEMU's named block nodes by name.
func queryNodes(ctx context.Context, c *qmp.Client) (map[string]blockNode, error) {
	var nodes []blockNode
	if err := c.Execute(ctx, "query-named-block-nodes", map[string]bool{"flat": true}, &nodes); err != nil {
		return nil, err
	}
	m := make(map[string]blockNode, len(nodes))
	for _, n := range nodes {
		m[n.NodeName] = n
	}
	return m, nil
}

func queryNode(ctx context.Context, c *qmp.Client, name string) (blockNode, error) {
	nodes, err := queryNodes(ctx, c)
	if err != nil {
		return blockNode{}, err
	}
	n, ok := nodes[name]
	if !ok {
		return blockNode{}, fmt.Errorf("QEMU has no block node %q", name)
	}
	return n, nil
}

// qemuImg runs qemu-img with args.
func (h *Hypervisor) qemuImg(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, h.cfg.QemuImg, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// randomToken returns 16 random hex digits, to name what one snapshot
// creates.
func randomToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
