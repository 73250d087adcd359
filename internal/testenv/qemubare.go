package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pglogship/pglogship/hypervisor/qemu/qmp"
)

const installBareQEMU = "apt-get update && apt-get install -y qemu-system-x86 qemu-utils"

// BareQEMUDefaultDiskSize is the disk size StartBareQEMU uses by default.
const BareQEMUDefaultDiskSize = 32 << 20

// bareQEMUStartTimeout bounds how long StartBareQEMU waits for the monitor.
const bareQEMUStartTimeout = 30 * time.Second

// BareQEMUConfig configures StartBareQEMU.
type BareQEMUConfig struct {
	DiskSize int64 // virtual size of the disk in bytes; 0 means BareQEMUDefaultDiskSize
}

// BareQEMU is a QEMU process with a qcow2 disk attached to a virtio disk
// device, but no guest OS: the machine is created paused (-S) and never
// runs a CPU. Block jobs, dirty bitmaps and QMP work as with a running
// guest, and the test makes "guest writes" through the device with
// qemu-io (Write, WriteFile, WriteZeroes), so they pass through the same
// block graph a guest's writes would, including a backup job's
// copy-before-write filter.
type BareQEMU struct {
	// QMPSocket is a QMP monitor for the code under test. QEMU serves one
	// client per monitor, so the helpers use a second one of their own.
	QMPSocket string
	Node      string // "disk0": the qcow2 format node of the disk
	Disk      string // the disk's qcow2 file
	Dir       string // a private directory, removed in t.Cleanup
	QemuImg   string // absolute path of qemu-img
	LogFile   string // QEMU's stdout and stderr

	device string // QOM path of the virtio-blk backend (qemu-io -d)
	ctl    *qmp.Client
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartBareQEMU creates a disk, starts qemu-system-x86_64 (TCG, paused,
// no boot device) with it as node "disk0" behind a virtio-blk device, and
// returns once its monitors answer. QEMU is stopped in t.Cleanup.
func StartBareQEMU(t testing.TB, cfg BareQEMUConfig) *BareQEMU {
	t.Helper()
	if cfg.DiskSize == 0 {
		cfg.DiskSize = BareQEMUDefaultDiskSize
	}
	system := bareQEMUBinary(t, "qemu-system-x86_64")
	q := &BareQEMU{
		Node:    "disk0",
		QemuImg: bareQEMUBinary(t, "qemu-img"),
		device:  "/machine/peripheral/vd0/virtio-backend",
		exited:  make(chan struct{}),
	}
	q.Dir = privateDir(t, "pglogship-qemu-")
	if strings.Contains(q.Dir, ",") {
		t.Fatalf("testenv: QEMU option values cannot hold the comma in %s", q.Dir)
	}
	q.QMPSocket = filepath.Join(q.Dir, "qmp.sock")
	q.Disk = filepath.Join(q.Dir, "disk.qcow2")
	q.LogFile = filepath.Join(q.Dir, "qemu.log")
	ctlSocket := filepath.Join(q.Dir, "ctl.sock")
	q.qemuImg(t, "create", "-q", "-f", "qcow2", q.Disk, strconv.FormatInt(cfg.DiskSize, 10))

	logf, err := os.Create(q.LogFile)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer logf.Close() // QEMU holds its own descriptor
	q.cmd = exec.Command(system,
		"-machine", "q35,accel=tcg", "-S", "-nodefaults", "-no-user-config", "-display", "none", "-m", "32M",
		"-qmp", "unix:"+q.QMPSocket+",server=on,wait=off",
		"-qmp", "unix:"+ctlSocket+",server=on,wait=off",
		"-blockdev", "node-name=disk0-file,driver=file,filename="+q.Disk,
		"-blockdev", "node-name=disk0,driver=qcow2,file=disk0-file",
		"-device", "virtio-blk-pci,drive=disk0,id=vd0")
	q.cmd.Stdout, q.cmd.Stderr = logf, logf
	q.cmd.Env = cleanEnv()
	// Own process group, so the kill in Cleanup reaches only what we started.
	q.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := q.cmd.Start(); err != nil {
		t.Fatalf("testenv: run %s: %v", system, err)
	}
	go func() {
		_ = q.cmd.Wait()
		close(q.exited)
	}()
	t.Cleanup(func() { q.Stop(t) })

	deadline := time.Now().Add(bareQEMUStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		q.ctl, err = qmp.Dial(ctx, ctlSocket)
		cancel()
		if err == nil {
			return q
		}
		select {
		case <-q.exited:
			t.Fatalf("testenv: QEMU exited at start: %v\n%s", q.cmd.ProcessState, logTail(q.LogFile))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: QEMU monitor not up within %v: %v\n%s", bareQEMUStartTimeout, err, logTail(q.LogFile))
		}
	}
}

// bareQEMUBinary returns the absolute path of a QEMU program on PATH or
// fails t with the command that installs it.
func bareQEMUBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testenv: %s not found on PATH: install it with: %s", name, installBareQEMU)
	}
	return absPath(t, p)
}

// QemuImg returns the absolute path of qemu-img, or fails t with the
// command that installs it.
func QemuImg(t testing.TB) string {
	t.Helper()
	return bareQEMUBinary(t, "qemu-img")
}

func (q *BareQEMU) qemuImg(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(q.QemuImg, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Control returns the helpers' own QMP connection, for the test to query
// or steer QEMU (query-jobs, block-dirty-bitmap-remove, ...) while the
// code under test holds QMPSocket.
func (q *BareQEMU) Control() *qmp.Client { return q.ctl }

// Execute runs a QMP command on the control connection and fails t on
// error.
func (q *BareQEMU) Execute(t testing.TB, command string, args, result any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.ctl.Execute(ctx, command, args, result); err != nil {
		t.Fatalf("testenv: QEMU %v", err)
	}
}

// IO runs a qemu-io command (such as "write -P 0x5a 1M 2M") on the disk
// through its virtio device, as a guest write would go, and fails t if
// qemu-io reports an error.
func (q *BareQEMU) IO(t testing.TB, command string) {
	t.Helper()
	if strings.ContainsAny(command, `"\`) {
		t.Fatalf("testenv: qemu-io command %q: quotes and backslashes not supported", command)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// qemu-io prints its failures on QEMU's stdout, our log, and the HMP
	// command succeeds anyway: anything new in the log is a failure
	// (commands are quiet, -q, when they succeed).
	before := fileSize(q.LogFile)
	out, err := q.ctl.HumanMonitorCommand(ctx, fmt.Sprintf(`qemu-io -d %s "%s"`, q.device, command))
	if err != nil {
		t.Fatalf("testenv: qemu-io %s: %v", command, err)
	}
	if out = strings.TrimSpace(out); out != "" {
		t.Fatalf("testenv: qemu-io %s: %s", command, out)
	}
	if b, _ := os.ReadFile(q.LogFile); int64(len(b)) > before {
		t.Fatalf("testenv: qemu-io %s: %s", command, strings.TrimSpace(string(b[before:])))
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Write fills length bytes at offset with pattern.
func (q *BareQEMU) Write(t testing.TB, pattern byte, offset, length int64) {
	t.Helper()
	q.IO(t, fmt.Sprintf("write -q -P 0x%02x %d %d", pattern, offset, length))
}

// WriteFile writes the first length bytes of the file at src to offset:
// with random bytes in src, data that does not compress.
func (q *BareQEMU) WriteFile(t testing.TB, src string, offset, length int64) {
	t.Helper()
	if strings.ContainsAny(src, " \t") {
		t.Fatalf("testenv: qemu-io source path %q has white space", src)
	}
	q.IO(t, fmt.Sprintf("write -q -s %s %d %d", src, offset, length))
}

// WriteZeroes zeroes length bytes at offset.
func (q *BareQEMU) WriteZeroes(t testing.TB, offset, length int64) {
	t.Helper()
	q.IO(t, fmt.Sprintf("write -q -z %d %d", offset, length))
}

// CopyDisk writes what the guest sees on its disk now into a new qcow2
// file dst: it flushes QEMU's caches and converts the disk file while
// QEMU keeps it open. Nothing may write to the disk meanwhile.
func (q *BareQEMU) CopyDisk(t testing.TB, dst string) {
	t.Helper()
	q.IO(t, "flush")
	q.qemuImg(t, "convert", "-U", "-O", "qcow2", q.Disk, dst)
}

// Identical reports whether two images hold the same guest-visible
// content (qemu-img compare). One may be Disk while QEMU runs; nothing may
// write to it meanwhile.
func (q *BareQEMU) Identical(t testing.TB, a, b string) bool {
	t.Helper()
	if a == q.Disk || b == q.Disk {
		q.IO(t, "flush") // QEMU caches qcow2 metadata
	}
	out, err := exec.Command(q.QemuImg, "compare", "-U", a, b).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false
	}
	t.Fatalf("testenv: qemu-img compare %s %s: %v\n%s", a, b, err, out)
	return false
}

// Stop quits QEMU (QMP quit, then SIGKILL after 10 s) and waits for it to
// exit. Idempotent; t.Cleanup calls it.
func (q *BareQEMU) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-q.exited:
		return
	default:
	}
	if q.ctl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = q.ctl.Execute(ctx, "quit", nil, nil) // the connection may end before the answer
		cancel()
		q.ctl.Close()
	}
	select {
	case <-q.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-q.cmd.Process.Pid, syscall.SIGKILL)
		<-q.exited
		t.Errorf("testenv: QEMU did not quit within 10 s; killed\n%s", logTail(q.LogFile))
	}
}

// BackingChain lists image and the files under it, top first (qemu-img
// info --backing-chain).
func (q *BareQEMU) BackingChain(t testing.TB, image string) []string {
	t.Helper()
	var infos []struct {
		Filename string `json:"filename"`
	}
	if err := json.Unmarshal([]byte(q.qemuImg(t, "info", "-U", "--backing-chain", "--output=json", image)), &infos); err != nil {
		t.Fatalf("testenv: qemu-img info %s: %v", image, err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Filename)
	}
	return out
}

// ConvertOf writes a standalone copy of image (its whole backing chain)
// to dst.
func (q *BareQEMU) ConvertOf(t testing.TB, image, dst string) {
	t.Helper()
	q.qemuImg(t, "convert", "-U", "-O", "qcow2", image, dst)
}
