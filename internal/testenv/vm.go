package testenv

// Real QEMU VMs booting the guest image (see vmimage.go), for tests of the
// QEMU hypervisor and of SSH guests with PostgreSQL inside a machine.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// VMAccelEnv names the environment variable that forces QEMU's accelerator,
// "tcg" or "kvm", instead of probing /dev/kvm.
const VMAccelEnv = "PGLOGSHIP_QEMU_ACCEL"

// Defaults for VMConfig.
const (
	DefaultVMMemory = 1536 // MiB
	DefaultVMCPUs   = 2
)

const (
	// vmBootTimeout bounds the wait for SSH and PostgreSQL. Under TCG an
	// idle host boots to SSH in about 41 s; parallel tests on two cores and
	// crash recovery of a restored disk take longer.
	vmBootTimeout = 4 * time.Minute
	// vmStopTimeout bounds the wait for QEMU to exit after QMP quit.
	vmStopTimeout = 30 * time.Second
	// kvmProbeTimeout bounds the probe boot; a working KVM gets the kernel
	// to its root-mount panic in a second or two.
	kvmProbeTimeout = 20 * time.Second
	// diskNode is the QMP node-name of the VM's qcow2 format node.
	diskNode = "disk0"
)

// VMConfig configures StartVM.
type VMConfig struct {
	// Disk is a qcow2 to boot instead of a fresh overlay on the guest
	// image, e.g. a restored backup. The VM writes to it.
	Disk   string
	Memory int // MiB; default DefaultVMMemory
	CPUs   int // default DefaultVMCPUs
	// NoPostgres keeps PostgreSQL from starting at boot (its units are
	// masked on the kernel command line), as a restore that must put its
	// recovery settings in place first needs; StartVM then waits for SSH
	// only.
	NoPostgres bool
	// Major is the PostgreSQL release whose cluster runs: 0 or 15,
	// Debian's 15/main on port 5432; GuestReleaseMajor, the npm registry's
	// build in GuestReleaseDataDir on GuestReleasePort. The other is
	// masked at boot.
	Major int
	// Forwards are the host services the guest may reach, each at an
	// address of the user-mode network's own (say 10.0.2.100:9000), each
	// to a port on the host's loopback; the network stays restricted
	// otherwise. Services a test starts for its guest: a store it ships
	// into directly.
	Forwards []Forward
}

// Forward lets the guest reach the host's 127.0.0.1:HostPort at
// GuestAddr (an unused address of 10.0.2.0/24, with its port).
type Forward struct {
	GuestAddr string
	HostPort  int
}

// VM is a running QEMU machine booted from the guest image. Its only
// network is QEMU's user-mode network with restrict=on: the guest reaches
// nothing, and the host reaches the guest's sshd on SSHAddr.
type VM struct {
	Dir            string // the VM's folder: disk overlay, logs, sockets
	DiskFile       string // the qcow2 the VM runs on
	DiskNode       string // QMP node-name of its qcow2 format node ("disk0")
	QMPSocket      string // QMP control socket (unix)
	QGASocket      string // qemu-guest-agent channel (unix)
	SSHAddr        string // 127.0.0.1:port, forwarded to the guest's port 22
	HostKey        ssh.PublicKey
	KnownHostsFile string // one line: "[127.0.0.1]:port ssh-ed25519 AAAA..."
	ClientSigner   ssh.Signer
	ClientKeyFile  string // OpenSSH private key of ClientSigner (0600)
	SerialLog      string // the guest's console
	QEMULog        string // QEMU's own output
	Accel          string // "tcg" or "kvm"
	Major          int    // the PostgreSQL release that runs (VMConfig.Major)
	Port           int    // its port, on the socket directory /var/run/postgresql

	done    chan struct{} // closed when QEMU has exited
	waitErr error         // QEMU's exit status, set before done is closed
	pid     int

	mu      sync.Mutex
	stopped bool
}

// StartVM boots a VM and returns once root can log in over SSH and
// PostgreSQL answers `select 1`. The VM is stopped in t.Cleanup.
func StartVM(t testing.TB, cfg VMConfig) *VM {
	t.Helper()
	if cfg.Memory == 0 {
		cfg.Memory = DefaultVMMemory
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultVMCPUs
	}
	port := 5432
	switch debian, _ := strconv.Atoi(GuestPostgresVersion); cfg.Major {
	case 0, debian:
		cfg.Major = debian
	case GuestReleaseMajor:
		port = GuestReleasePort
	default:
		t.Fatalf("testenv: the guest image has PostgreSQL %d and %d, not %d", debian, GuestReleaseMajor, cfg.Major)
	}
	img := GuestImage(t)
	qemu := requireBinary(t, "qemu-system-x86_64", installQemuSystem)
	accel := vmAccel(t, qemu, img)

	v := &VM{
		Dir:           t.TempDir(),
		DiskNode:      diskNode,
		HostKey:       img.HostKey,
		ClientSigner:  img.ClientSigner,
		ClientKeyFile: img.ClientKeyFile,
		Accel:         accel,
		Major:         cfg.Major,
		Port:          port,
	}
	v.KnownHostsFile = filepath.Join(v.Dir, "known_hosts")
	v.SerialLog = filepath.Join(v.Dir, "serial.log")
	v.QEMULog = filepath.Join(v.Dir, "qemu.log")
	sockDir := v.Dir
	// A unix socket path has at most 107 bytes; t.TempDir can be longer.
	if len(filepath.Join(sockDir, "qmp.sock")) > 100 {
		sockDir = shortTempDir(t)
	}
	v.QMPSocket = filepath.Join(sockDir, "qmp.sock")
	v.QGASocket = filepath.Join(sockDir, "qga.sock")

	if cfg.Disk != "" {
		v.DiskFile = absPath(t, cfg.Disk)
		if _, err := os.Stat(v.DiskFile); err != nil {
			t.Fatalf("testenv: vm disk: %v", err)
		}
	} else {
		v.DiskFile = filepath.Join(v.Dir, "disk.qcow2")
		qemuImg := requireBinary(t, "qemu-img", installQemuUtils)
		out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2",
			"-b", img.Base, "-F", "qcow2", v.DiskFile).CombinedOutput()
		if err != nil {
			t.Fatalf("testenv: vm overlay on %s: %v\n%s", img.Base, err, out)
		}
	}

	// Registered before the boot so that a VM left by a failed boot is
	// stopped too.
	t.Cleanup(func() { v.Stop(t) })

	// The free port can be taken before QEMU binds it; try a few.
	const attempts = 3
	for i := 1; ; i++ {
		port := freePort(t)
		v.SSHAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		line := knownhosts.Line([]string{knownhosts.Normalize(v.SSHAddr)}, v.HostKey)
		mustWriteFile(t, v.KnownHostsFile, []byte(line+"\n"), 0o644)
		v.start(t, qemu, img, cfg, port)
		err := v.waitReady(t, !cfg.NoPostgres)
		if err == nil {
			return v
		}
		log := logTail(v.QEMULog)
		if v.exited() && i < attempts && strings.Contains(log, "host forwarding rule") {
			t.Logf("testenv: vm port %d taken, retrying", port)
			v.done = nil
			continue
		}
		if errors.Is(err, errGuestHung) && i < attempts {
			// An emulator hang, not the image's fault: the guest is cut
			// off like a power cut and booted again on the same disk.
			kept := v.SerialLog + "." + strconv.Itoa(i)
			t.Logf("testenv: vm %s: %v; booting it again (serial log kept as %s)", v.SSHAddr, err, kept)
			v.kill()
			if err := os.Rename(v.SerialLog, kept); err != nil {
				t.Fatalf("testenv: %v", err)
			}
			v.done = nil
			continue
		}
		v.Stop(t)
		t.Fatalf("testenv: boot vm (%s, %s): %v\n%s\n%s", accel, v.DiskFile, err, log, logTail(v.SerialLog))
	}
}

// start launches QEMU as our child in its own process group.
func (v *VM) start(t testing.TB, qemu string, img *Image, cfg VMConfig, port int) {
	t.Helper()
	args := append(accelArgs(v.Accel),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-m", strconv.Itoa(cfg.Memory), "-smp", strconv.Itoa(cfg.CPUs),
		"-kernel", img.Kernel, "-initrd", img.Initrd,
		"-append", kernelArgs(cfg),
		"-no-reboot",
		"-chardev", "file,id=serial0,path="+qemuOptValue(v.SerialLog),
		"-serial", "chardev:serial0",
		// Named nodes: QMP blockdev-backup and persistent dirty bitmaps
		// address the qcow2 format node.
		"-blockdev", "node-name=disk0-file,driver=file,filename="+qemuOptValue(v.DiskFile),
		"-blockdev", "node-name="+diskNode+",driver=qcow2,file=disk0-file",
		"-device", "virtio-blk-pci,drive="+diskNode,
		// restrict=on: the guest gets DHCP and the forwarded ports, no route out.
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", port)+guestForwards(t, cfg.Forwards),
		"-device", "virtio-net-pci,netdev=n0",
		"-device", "virtio-rng-pci",
		"-chardev", "socket,id=qmp0,path="+qemuOptValue(v.QMPSocket)+",server=on,wait=off",
		"-mon", "chardev=qmp0,mode=control",
		"-chardev", "socket,id=qga0,path="+qemuOptValue(v.QGASocket)+",server=on,wait=off",
		"-device", "virtio-serial-pci",
		"-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
	)
	done := make(chan struct{})
	v.done = done
	pid, err := startChild(qemu, args, v.QEMULog, func(err error) { v.waitErr = err; close(done) })
	if err != nil {
		t.Fatalf("testenv: start %s: %v", qemu, err)
	}
	v.pid = pid
}

// kernelArgs is the guest kernel's command line. panic=-1 with -no-reboot:
// a guest kernel panic ends QEMU at once. cryptomgr.notests: the crypto
// self-tests cost boot time under TCG, and a CI guest hung inside them.
func kernelArgs(cfg VMConfig) string {
	args := "root=/dev/vda rw console=ttyS0 panic=-1 cryptomgr.notests"
	debian := " systemd.mask=postgresql.service systemd.mask=postgresql@" + GuestPostgresVersion + "-main.service"
	release := " systemd.mask=" + guestReleaseUnit
	switch {
	case cfg.NoPostgres:
		args += debian + release
	case cfg.Major == GuestReleaseMajor:
		args += debian
	default:
		args += release
	}
	return args
}

// startChild starts name in its own process group with output to logPath,
// killed if this process dies, and calls exited with Wait's result.
func startChild(name string, args []string, logPath string, exited func(error)) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv()
	p, err := startServer(cmd)
	if err != nil {
		logf.Close()
		return 0, err
	}
	go func() {
		<-p.done
		logf.Close()
		exited(p.waitErr)
	}()
	return p.pid(), nil
}

// qemuOptValue escapes a value inside a comma-separated QEMU option
// (t.TempDir keeps commas of test names).
// guestForwards is the -netdev options that let the guest reach fw: each
// connection runs tcpfwd, which connects it to the host's loopback and
// logs each connection's end to tcpfwd.log beside it (shown when the test
// fails).
func guestForwards(t testing.TB, fw []Forward) string {
	if len(fw) == 0 {
		return ""
	}
	bin := filepath.Join(t.TempDir(), "tcpfwd")
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(bin), "tcpfwd.log")); err == nil && t.Failed() {
			t.Logf("testenv: guest forwards:\n%s", tail(string(b), 40))
		}
	})
	cmd := exec.Command("go", "build", "-o", bin, "github.com/pglogship/pglogship/internal/testenv/tcpfwd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: build tcpfwd: %v\n%s", err, b)
	}
	var b strings.Builder
	for _, f := range fw {
		fmt.Fprintf(&b, ",guestfwd=tcp:%s-cmd:%s 127.0.0.1:%d %s", f.GuestAddr, qemuOptValue(bin), f.HostPort,
			qemuOptValue(filepath.Join(filepath.Dir(bin), "tcpfwd.log")))
	}
	return b.String()
}

func qemuOptValue(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

func accelArgs(accel string) []string {
	if accel == "kvm" {
		// arch-capabilities: some nested KVMs refuse its MSR.
		return []string{"-accel", "kvm", "-cpu", "host,-arch-capabilities"}
	}
	return []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
}

// errGuestHung is a guest whose kernel reports a CPU stuck far longer
// than a loaded host explains: QEMU's TCG once left a CI guest spinning
// on one instruction for minutes during boot.
var errGuestHung = errors.New("guest kernel hung")

// guestStuckFor is how long a soft lockup must last to count as a hang;
// shorter ones are a vCPU the host did not schedule.
const guestStuckFor = 60

var softLockup = regexp.MustCompile(`soft lockup - CPU#\d+ stuck for (\d+)s`)

// guestStuck returns the serial log's line of a lasting soft lockup, or "".
func guestStuck(serialLog string) string {
	b, err := os.ReadFile(serialLog)
	if err != nil {
		return ""
	}
	for _, m := range softLockup.FindAllSubmatch(b, -1) {
		if n, _ := strconv.Atoi(string(m[1])); n >= guestStuckFor {
			return string(m[0])
		}
	}
	return ""
}

// kill ends QEMU at once (SIGKILL to its process group) and waits for it.
func (v *VM) kill() {
	if !v.exited() { // its process group id is free again once it has
		_ = syscall.Kill(-v.pid, syscall.SIGKILL)
	}
	<-v.done
}

func (v *VM) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// waitReady polls until root logs in over SSH and postgres gets "1" from
// `select 1`, QEMU exits, or vmBootTimeout passes.
func (v *VM) waitReady(t testing.TB, postgres bool) error {
	t.Helper()
	start := time.Now()
	deadline := start.Add(vmBootTimeout)
	var sshAt time.Duration
	var lastErr error
	for {
		if v.exited() {
			return fmt.Errorf("qemu exited: %v", v.waitErr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v (last: %v)", vmBootTimeout, lastErr)
		}
		if stuck := guestStuck(v.SerialLog); stuck != "" {
			return fmt.Errorf("%w: %s", errGuestHung, stuck)
		}
		user, cmd := "root", "true"
		if sshAt != 0 {
			user, cmd = "postgres", fmt.Sprintf("psql -p %d -XAtqc 'select 1'", v.Port)
		}
		out, stderr, err := v.ssh(t, user, cmd, 30*time.Second)
		switch {
		case err != nil:
			lastErr = fmt.Errorf("%s: %w: %s", user, err, bytes.TrimSpace(stderr))
		case sshAt == 0 && !postgres:
			t.Logf("testenv: vm %s (%s): SSH after %v; PostgreSQL does not start at boot",
				v.SSHAddr, v.Accel, time.Since(start).Round(time.Second))
			return nil
		case sshAt == 0:
			sshAt = time.Since(start)
			continue
		case strings.TrimSpace(string(out)) == "1":
			t.Logf("testenv: vm %s (%s): SSH after %v, PostgreSQL after %v",
				v.SSHAddr, v.Accel, sshAt.Round(time.Second), time.Since(start).Round(time.Second))
			return nil
		default:
			lastErr = fmt.Errorf("select 1 returned %q", out)
		}
		select {
		case <-v.done:
		case <-time.After(time.Second):
		}
	}
}

// ClientConfig returns a client configuration that logs in as user with
// ClientSigner and accepts only the guest's host key in KnownHostsFile.
func (v *VM) ClientConfig(t testing.TB, user string) *ssh.ClientConfig {
	t.Helper()
	hostKeyCallback, err := knownhosts.New(v.KnownHostsFile)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(v.ClientSigner)},
		HostKeyCallback:   hostKeyCallback,
		HostKeyAlgorithms: []string{v.HostKey.Type()},
		Timeout:           10 * time.Second,
	}
}

// Run runs cmd in the guest as user ("root" or "postgres") over SSH and
// returns its standard output. It fails t when the command fails.
func (v *VM) Run(t testing.TB, user, cmd string) string {
	t.Helper()
	out, stderr, err := v.ssh(t, user, cmd, 0)
	if err != nil {
		t.Fatalf("testenv: vm %s: run %q as %s: %v\nstdout: %s\nstderr: %s", v.SSHAddr, cmd, user, err, out, stderr)
	}
	return string(out)
}

// Psql runs one SQL statement in the guest's PostgreSQL (the release
// that runs, with Debian's psql) as postgres (no double quotes in sql)
// and returns its unaligned output.
func (v *VM) Psql(t testing.TB, sql string) string {
	t.Helper()
	return strings.TrimSpace(v.Run(t, "postgres", fmt.Sprintf("psql -p %d -Atqc \"%s\"", v.Port, sql)))
}

// SwitchWAL makes the guest's PostgreSQL switch to a new WAL file and
// returns once the archiver has archived the one it closed, within two
// minutes, or fails t.
func (v *VM) SwitchWAL(t testing.TB) string {
	t.Helper()
	last := v.Psql(t, "SELECT pg_walfile_name(pg_switch_wal())")
	deadline := time.Now().Add(2 * time.Minute)
	for v.Psql(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < last {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: vm %s: %s not archived within two minutes", v.SSHAddr, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// ssh runs cmd on a new connection. A timeout > 0 bounds the whole
// exchange; otherwise only the connection setup is bounded, because a
// guest that accepts TCP (QEMU does, for the forwarded port) may never
// answer the SSH handshake.
func (v *VM) ssh(t testing.TB, user, cmd string, timeout time.Duration) (stdout, stderr []byte, err error) {
	t.Helper()
	config := v.ClientConfig(t, user)
	conn, err := net.DialTimeout("tcp", v.SSHAddr, config.Timeout)
	if err != nil {
		return nil, nil, err
	}
	setup := timeout
	if setup == 0 {
		setup = 30 * time.Second
	}
	_ = conn.SetDeadline(time.Now().Add(setup))
	c, chans, reqs, err := ssh.NewClientConn(conn, v.SSHAddr, config)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return nil, nil, err
	}
	defer session.Close()
	if timeout == 0 {
		_ = conn.SetDeadline(time.Time{})
	}
	var o, e bytes.Buffer
	session.Stdout, session.Stderr = &o, &e
	err = session.Run(cmd)
	return o.Bytes(), e.Bytes(), err
}

// Stop ends the VM: QMP quit, which closes the qcow2 cleanly (persistent
// dirty bitmaps are saved), then SIGKILL if QEMU is still there after
// vmStopTimeout. The guest gets no shutdown: its disk is as after a power
// cut. Stop is idempotent and also runs in t.Cleanup.
func (v *VM) Stop(t testing.TB) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped || v.done == nil {
		return
	}
	v.stopped = true
	if v.exited() {
		return
	}
	if err := qmpExecute(v.QMPSocket, 10*time.Second, qmpQuit); err != nil {
		t.Logf("testenv: vm %s: QMP quit: %v; killing QEMU", v.SSHAddr, err)
	} else {
		select {
		case <-v.done:
			return
		case <-time.After(vmStopTimeout):
			t.Logf("testenv: vm %s: QEMU still running %v after QMP quit; killing it", v.SSHAddr, vmStopTimeout)
		}
	}
	v.kill()
}

// qmpExecute runs commands (JSON objects) in turn on a new QMP
// connection and fails on the first error reply. It is not a QMP client
// (hypervisor/qemu has one): only enough to stop a VM, and for tests.
// A connection that ends right after "quit" counts as success.
func qmpExecute(socket string, timeout time.Duration, commands ...string) error {
	conn, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	dec := json.NewDecoder(conn)
	var greeting struct{ QMP json.RawMessage }
	if err := dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		return fmt.Errorf("no QMP greeting: %v", err)
	}
	for _, command := range append([]string{`{"execute": "qmp_capabilities"}`}, commands...) {
		if _, err := io.WriteString(conn, command+"\n"); err != nil {
			return err
		}
		for { // events may come before the reply
			var msg struct {
				Return json.RawMessage
				Error  *struct{ Class, Desc string }
			}
			if err := dec.Decode(&msg); err != nil {
				if command == qmpQuit && errors.Is(err, io.EOF) {
					return nil // gone before it replied
				}
				return fmt.Errorf("%s: %w", command, err)
			}
			if msg.Error != nil {
				return fmt.Errorf("%s: %s: %s", command, msg.Error.Class, msg.Error.Desc)
			}
			if msg.Return != nil {
				break
			}
		}
	}
	return nil
}

const qmpQuit = `{"execute": "quit"}`

// shortTempDir is a fresh folder with a short path, removed in t.Cleanup.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgvm")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var (
	vmAccelMu      sync.Mutex
	vmAccelVerdict string
)

// vmAccel picks QEMU's accelerator once per process: $PGLOGSHIP_QEMU_ACCEL
// if set, else kvm if a probe boot shows that it works, else tcg. The
// probe is needed because a /dev/kvm can exist and still hang a stock
// guest kernel (a nested paravirtual KVM does).
func vmAccel(t testing.TB, qemu string, img *Image) string {
	t.Helper()
	switch a := os.Getenv(VMAccelEnv); a {
	case "tcg", "kvm":
		return a
	case "":
	default:
		t.Fatalf("testenv: $%s=%q: want tcg or kvm", VMAccelEnv, a)
	}
	vmAccelMu.Lock()
	defer vmAccelMu.Unlock()
	if vmAccelVerdict == "" {
		ok, why := probeKVM(qemu, img)
		vmAccelVerdict = "tcg"
		if ok {
			vmAccelVerdict = "kvm"
		}
		t.Logf("testenv: QEMU accelerator %s: %s (set $%s to skip the probe)", vmAccelVerdict, why, VMAccelEnv)
	}
	return vmAccelVerdict
}

// probeKVM boots the guest kernel under KVM with no disk: with a usable
// KVM it panics quickly for want of a root filesystem and, with
// panic=-1 and -no-reboot, QEMU exits.
func probeKVM(qemu string, img *Image) (ok bool, why string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("no usable /dev/kvm (%v)", err)
	}
	f.Close()
	dir, err := os.MkdirTemp("", "pglogship-kvmprobe-")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(dir)
	serial := filepath.Join(dir, "serial.log")
	args := append(accelArgs("kvm"), "-nodefaults", "-no-user-config", "-display", "none",
		"-m", "256", "-kernel", img.Kernel, "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent",
		"-no-reboot", "-serial", "file:"+serial)
	done := make(chan error, 1)
	pid, err := startChild(qemu, args, filepath.Join(dir, "qemu.log"), func(err error) { done <- err })
	if err != nil {
		return false, err.Error()
	}
	select {
	case <-done:
		console, _ := os.ReadFile(serial)
		if bytes.Contains(console, []byte("Kernel panic")) {
			return true, "a probe boot under KVM reached the kernel's root-mount panic"
		}
		return false, "the probe boot under KVM ended without reaching the kernel's root-mount panic\n" + logTail(filepath.Join(dir, "qemu.log"))
	case <-time.After(kvmProbeTimeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		return false, fmt.Sprintf("a probe boot under KVM did not reach the kernel's root-mount panic within %v", kvmProbeTimeout)
	}
}
