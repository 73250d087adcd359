package testenv

// The VM guest image: Debian 12 (bookworm) with PostgreSQL 15 (and 18 from
// the npm registry) and OpenSSH,
// built once with debootstrap and mkfs.ext4 -d (no loop mounts) and cached
// outside the repository under CacheDir()/vm/<recipe hash>. VMs never write
// to it: each boots a qcow2 overlay on top.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// guestRecipeVersion is part of the image's cache key; bump it when the
// build changes in a way the hashed texts below do not show.
const guestRecipeVersion = "1"

const (
	guestSuite  = "bookworm"
	guestMirror = "http://deb.debian.org/debian"
	guestDisk   = "4G" // virtual size of the root disk (sparse)
	// GuestPostgresVersion is the PostgreSQL major version in the guest; its
	// cluster is 15/main with data in /var/lib/postgresql/15/main.
	GuestPostgresVersion = "15"
	// GuestTempDir is a folder in the guest owned by postgres (0700) for
	// the runtime's temporary WAL folder.
	GuestTempDir = "/var/lib/pglogship"

	// The guest also holds a second release, from the npm registry (Debian
	// has only 15): its server binaries under GuestReleaseBinDir and a
	// cluster in GuestReleaseDataDir (configuration inside it) on port
	// GuestReleasePort, started by the unit postgresql-18.service. A VM
	// runs one of the two clusters (VMConfig.Major).
	GuestReleaseMajor   = 18
	GuestReleaseBinDir  = "/opt/postgresql-18/native/bin"
	GuestReleaseDataDir = "/var/lib/postgresql/18/main"
	GuestReleasePort    = 5433
	guestReleaseUnit    = "postgresql-18.service"
)

// guestPackages are installed by debootstrap on top of minbase.
var guestPackages = []string{
	"systemd-sysv", "udev", "linux-image-amd64",
	"postgresql", "openssh-server", "openssh-sftp-server",
	"qemu-guest-agent", "iproute2", "procps", "e2fsprogs",
}

// guestConfigureScript configures the debootstrapped tree at $ROOTFS.
// The Go side has already written the sshd host key; $AUTHORIZED_KEY is the
// client key's authorized_keys line.
const guestConfigureScript = `set -euo pipefail
r=$ROOTFS
inroot() { chroot "$r" "$@"; }

echo pglogship-guest >"$r/etc/hostname"
cat >"$r/etc/hosts" <<'EOF'
127.0.0.1 localhost
127.0.1.1 pglogship-guest
::1 localhost ip6-localhost ip6-loopback
EOF
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"$r/etc/fstab"

# Network: DHCP from QEMU's user-mode network (restrict=on: no way out).
mkdir -p "$r/etc/systemd/network"
cat >"$r/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF

# sshd: only the generated ed25519 host key, keys only, no DNS lookups
# (there is no DNS). The drop-in comes first in sshd_config, so it wins.
rm -f "$r"/etc/ssh/ssh_host_rsa_key* "$r"/etc/ssh/ssh_host_ecdsa_key*
cat >"$r/etc/ssh/sshd_config.d/pglogship.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 100
MaxSessions 100
EOF

# The client key logs in as root and as postgres; as postgres it reaches
# PostgreSQL by peer authentication on the local socket.
install -d -m 0700 "$r/root/.ssh"
printf '%s\n' "$AUTHORIZED_KEY" >"$r/root/.ssh/authorized_keys"
chmod 0600 "$r/root/.ssh/authorized_keys"
pghome=$(inroot getent passwd postgres | cut -d: -f6)
inroot install -d -o postgres -g postgres -m 0700 "$pghome/.ssh"
printf '%s\n' "$AUTHORIZED_KEY" >"$r$pghome/.ssh/authorized_keys"
inroot chown postgres:postgres "$pghome/.ssh/authorized_keys"
chmod 0600 "$r$pghome/.ssh/authorized_keys"
inroot install -d -o postgres -g postgres -m 0700 /var/lib/pglogship

# PostgreSQL: the cluster the package created, ready for WAL archiving
# (archive_command stays empty: the runtime sets it), local only.
test -f "$r/var/lib/postgresql/15/main/PG_VERSION" || { echo "no 15/main cluster" >&2; exit 1; }
cat >"$r/etc/postgresql/15/main/conf.d/pglogship.conf" <<'EOF'
listen_addresses = 'localhost'
wal_level = replica
archive_mode = on
EOF
inroot chown postgres:postgres /etc/postgresql/15/main/conf.d/pglogship.conf

# PostgreSQL 18 from the npm registry's tree ($PG18_TREE on the host): its
# files under /opt, root's; a cluster made on the host by initdb (the
# tree is the same) as $PG18_CLUSTER, given to the guest's postgres; a
# unit of its own.
install -d "$r/opt"
cp -a "$PG18_TREE" "$r/opt/postgresql-18"
chown -R 0:0 "$r/opt/postgresql-18"
chmod -R go-w "$r/opt/postgresql-18"
install -d "$r/var/lib/postgresql/18"
cp -a "$PG18_CLUSTER" "$r/var/lib/postgresql/18/main"
cat >>"$r/var/lib/postgresql/18/main/postgresql.conf" <<'CONF'
port = 5433
listen_addresses = 'localhost'
unix_socket_directories = '/var/run/postgresql'
wal_level = replica
archive_mode = on
CONF
pguid=$(inroot id -u postgres); pggid=$(inroot id -g postgres)
chown -R "$pguid:$pggid" "$r/var/lib/postgresql/18"
chmod 0700 "$r/var/lib/postgresql/18/main"
cat >"$r/etc/systemd/system/postgresql-18.service" <<'UNIT'
[Unit]
Description=PostgreSQL 18 (npm registry build, pglogship tests)
After=network.target

[Service]
Type=simple
User=postgres
Group=postgres
RuntimeDirectory=postgresql
RuntimeDirectoryPreserve=yes
RuntimeDirectoryMode=2775
ExecStart=/opt/postgresql-18/native/bin/postgres -D /var/lib/postgresql/18/main
ExecReload=/bin/kill -HUP $MAINPID
KillMode=mixed
KillSignal=SIGINT
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
UNIT
inroot systemctl enable postgresql-18.service

# Units: the services tests need, nothing that wakes up on its own.
# qemu-guest-agent has no [Install]: udev starts it when its port appears.
inroot systemctl enable ssh postgresql systemd-networkd
inroot systemctl mask systemd-networkd-wait-online.service \
	apt-daily.timer apt-daily-upgrade.timer fstrim.timer \
	e2scrub_all.timer e2scrub_reap.service

# Smaller image: no package lists, docs or translations, and no kernel
# modules for hardware a QEMU guest never has.
rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb
rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/*
find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
kver=$(ls "$r/lib/modules")
for d in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet \
	drivers/infiniband drivers/staging drivers/bluetooth drivers/iio \
	drivers/isdn drivers/usb sound net/bluetooth net/wireless net/mac80211; do
	rm -rf "$r/lib/modules/$kver/kernel/$d"
done
inroot depmod -a "$kver"
`

// Image is the cached guest image.
type Image struct {
	Dir           string        // cache folder of this recipe
	Base          string        // base.qcow2; never modified, VMs boot overlays
	Kernel        string        // the guest's vmlinuz, booted with -kernel
	Initrd        string        // the guest's initrd.img
	ClientSigner  ssh.Signer    // authorized for root and postgres in the guest
	ClientKeyFile string        // OpenSSH private key of ClientSigner (0600)
	HostKey       ssh.PublicKey // the guest sshd's only host key
	HostKeyLine   string        // HostKey as "ssh-ed25519 AAAA...", for known_hosts
}

// The files of a finished image in its cache folder.
const (
	imageBase       = "base.qcow2"
	imageKernel     = "vmlinuz"
	imageInitrd     = "initrd.img"
	imageClientKey  = "client_ed25519_key"
	imageHostKeyPub = "ssh_host_ed25519_key.pub"
)

var (
	guestImageMu     sync.Mutex
	guestImageCached *Image
)

// GuestImage returns the guest image, building it on first use (as root:
// about 2 minutes, plus downloads while the .deb cache is cold). Test
// processes that call it at once build it once: a lock on the cache folder
// serialises them, and a build is renamed into place only when complete.
func GuestImage(t testing.TB) *Image {
	t.Helper()
	guestImageMu.Lock()
	defer guestImageMu.Unlock()
	if guestImageCached != nil {
		return guestImageCached
	}
	root := filepath.Join(CacheDir(), "vm")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatalf("testenv: vm cache: %v", err)
	}
	unlock := lockDir(t, root)
	defer unlock()

	dir := filepath.Join(root, guestRecipeHash())
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		buildGuestImage(t, root, dir)
	} else if err != nil {
		t.Fatalf("testenv: vm cache: %v", err)
	}
	guestImageCached = loadImage(t, dir)
	return guestImageCached
}

// guestRecipeHash keys the cache on everything that shapes the image.
func guestRecipeHash() string {
	h := sha256.New()
	r, _ := ReleaseOf(GuestReleaseMajor)
	for _, s := range []string{guestRecipeVersion, guestSuite, guestMirror, guestDisk,
		strings.Join(guestPackages, ","), guestConfigureScript, r.NPMVersion, r.Integrity} {
		fmt.Fprintf(h, "%d:%s\n", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// lockDir takes an exclusive flock on dir/lock, waiting for another
// process's build; the returned function releases it.
func lockDir(t testing.TB, dir string) func() {
	t.Helper()
	return lockFile(t, filepath.Join(dir, "lock"), "the VM image in "+dir)
}

// lockFile takes an exclusive flock on path (created if missing), waiting
// while another process holds it to build what, and returns the function
// that releases it. flock(1) on the same file takes the same lock, so a
// shell script (scripts/setup) and tests build a cached thing once.
func lockFile(t testing.TB, path, what string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("testenv: cache lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Logf("testenv: waiting for another process building %s", what)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Fatalf("testenv: cache lock %s: %v", path, err)
		}
	}
	// Closing the file releases the lock.
	return func() { f.Close() }
}

func loadImage(t testing.TB, dir string) *Image {
	t.Helper()
	img := &Image{
		Dir:           dir,
		Base:          filepath.Join(dir, imageBase),
		Kernel:        filepath.Join(dir, imageKernel),
		Initrd:        filepath.Join(dir, imageInitrd),
		ClientKeyFile: filepath.Join(dir, imageClientKey),
	}
	for _, p := range []string{img.Base, img.Kernel, img.Initrd} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("testenv: vm image %s is incomplete (%v): remove the folder to rebuild it", dir, err)
		}
	}
	keyPEM, err := os.ReadFile(img.ClientKeyFile)
	if err != nil {
		t.Fatalf("testenv: vm image client key: %v", err)
	}
	if img.ClientSigner, err = ssh.ParsePrivateKey(keyPEM); err != nil {
		t.Fatalf("testenv: vm image client key %s: %v", img.ClientKeyFile, err)
	}
	hostLine, err := os.ReadFile(filepath.Join(dir, imageHostKeyPub))
	if err != nil {
		t.Fatalf("testenv: vm image host key: %v", err)
	}
	if img.HostKey, _, _, _, err = ssh.ParseAuthorizedKey(hostLine); err != nil {
		t.Fatalf("testenv: vm image host key: %v", err)
	}
	img.HostKeyLine = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(img.HostKey)))
	return img
}

// buildGuestImage builds the image into a temporary folder next to dir and
// renames it to dir when complete. The caller holds the cache lock.
func buildGuestImage(t testing.TB, root, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: the VM guest image %s is not built yet, and building it needs root "+
			"(debootstrap, and mkfs.ext4 -d to keep file ownership): run the tests as root once", dir)
	}
	debootstrap := requireBinary(t, "debootstrap", installDebootstrap)
	mkfs := requireBinary(t, "mkfs.ext4", installE2fsprogs)
	qemuImg := requireBinary(t, "qemu-img", installQemuUtils)

	// Builds that crashed left their temporary folders; we hold the lock,
	// so none of them is still running.
	stale, _ := filepath.Glob(dir + ".tmp-*")
	for _, s := range stale {
		if err := removeBuild(s); err != nil {
			t.Logf("testenv: remove a crashed VM image build: %v", err)
		}
	}
	tmp, err := os.MkdirTemp(root, filepath.Base(dir)+".tmp-")
	if err != nil {
		t.Fatalf("testenv: vm image: %v", err)
	}
	done := false
	defer func() {
		if !done {
			if err := removeBuild(tmp); err != nil {
				t.Logf("testenv: remove the failed VM image build: %v", err)
			}
		}
	}()
	debs := filepath.Join(root, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		t.Fatalf("testenv: vm image: %v", err)
	}
	logFile := filepath.Join(root, "build-"+filepath.Base(dir)+".log")
	logf, err := os.Create(logFile)
	if err != nil {
		t.Fatalf("testenv: vm image: %v", err)
	}
	defer logf.Close()
	run := func(step string, cmd *exec.Cmd) {
		t.Helper()
		start := time.Now()
		line := strings.Join(cmd.Args, " ")
		if len(line) > 300 {
			line = line[:300] + "..."
		}
		fmt.Fprintf(logf, "### %s: %s\n", step, line)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := runTied(cmd); err != nil {
			t.Fatalf("testenv: vm image %s: %v\n%s", step, err, logTail(logFile))
		}
		t.Logf("testenv: vm image: %s took %v", step, time.Since(start).Round(time.Second))
	}
	t.Logf("testenv: building the VM guest image (once; cached in %s, log %s)", dir, logFile)

	rootfs := filepath.Join(tmp, "rootfs")
	// C.UTF-8, so the cluster the postgresql package creates is UTF8.
	// (exec keeps the last of duplicate variables.)
	env := append(cleanEnv(), "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	cmd := exec.Command(debootstrap, "--variant=minbase", "--cache-dir="+debs,
		"--include="+strings.Join(guestPackages, ","), guestSuite, rootfs, guestMirror)
	cmd.Env = env
	run("debootstrap", cmd)

	hostSigner := writeEd25519Key(t, filepath.Join(rootfs, "etc/ssh/ssh_host_ed25519_key"))
	hostLine := ssh.MarshalAuthorizedKey(hostSigner.PublicKey())
	mustWriteFile(t, filepath.Join(rootfs, "etc/ssh/ssh_host_ed25519_key.pub"), hostLine, 0o644)
	mustWriteFile(t, filepath.Join(tmp, imageHostKeyPub), hostLine, 0o644)
	client := writeEd25519Key(t, filepath.Join(tmp, imageClientKey))

	// The second release's tree, and its cluster made by its own initdb.
	release, _ := ReleaseOf(GuestReleaseMajor)
	bin, err := FetchRelease(release, testLogWriter{t})
	if err != nil {
		t.Fatalf("testenv: vm image: PostgreSQL %d: %v", GuestReleaseMajor, err)
	}
	acct := serverAccount(t)
	clusterDir := privateDir(t, "pglogship-vm-pg-")
	chown(t, acct, clusterDir)
	cluster := filepath.Join(clusterDir, "main")
	initdb := commandAs(acct, filepath.Join(bin, "initdb"), "-D", cluster, "-U", "postgres",
		"--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = clusterDir
	run("initdb "+strconv.Itoa(GuestReleaseMajor), initdb)

	cmd = exec.Command("bash", "-c", guestConfigureScript)
	cmd.Env = append(env, "ROOTFS="+rootfs,
		"AUTHORIZED_KEY="+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(client.PublicKey()))),
		"PG18_TREE="+filepath.Dir(filepath.Dir(bin)), "PG18_CLUSTER="+cluster)
	run("configure", cmd)

	// QEMU boots the kernel directly; /boot/vmlinuz is 0600 in Debian.
	copyOne := func(pattern, to string) {
		t.Helper()
		matches, _ := filepath.Glob(filepath.Join(rootfs, pattern))
		if len(matches) != 1 {
			t.Fatalf("testenv: vm image: want one %s in the rootfs, found %v", pattern, matches)
		}
		if err := copyNewFile(matches[0], filepath.Join(tmp, to)); err != nil {
			t.Fatalf("testenv: vm image: %v", err)
		}
		if err := os.Chmod(filepath.Join(tmp, to), 0o644); err != nil {
			t.Fatalf("testenv: vm image: %v", err)
		}
	}
	copyOne("boot/vmlinuz-*", imageKernel)
	copyOne("boot/initrd.img-*", imageInitrd)

	raw := filepath.Join(tmp, "disk.raw")
	run("truncate", exec.Command("truncate", "-s", guestDisk, raw))
	run("mkfs.ext4", exec.Command(mkfs, "-F", "-q", "-L", "vmroot", "-d", rootfs, raw))
	base := filepath.Join(tmp, imageBase)
	run("qemu-img convert", exec.Command(qemuImg, "convert", "-O", "qcow2", raw, base))
	for _, p := range []string{raw, rootfs} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatalf("testenv: vm image: %v", err)
		}
	}
	// Read-only: overlays only ever read their backing file.
	if err := os.Chmod(base, 0o444); err != nil {
		t.Fatalf("testenv: vm image: %v", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatalf("testenv: vm image: %v", err)
	}
	done = true
}

// runTied runs cmd to completion; if this process dies first (a test
// timeout), cmd is killed instead of going on writing into the cache.
func runTied(cmd *exec.Cmd) error {
	// Pdeathsig follows the thread that started the child: keep it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd.Run()
}

// removeBuild removes a build folder. A debootstrap that was killed leaves
// /proc, /sys and /dev mounted in its rootfs; they are unmounted first so
// that the removal never walks into the host's.
func removeBuild(dir string) error {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var below []string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		// Field 5 is the mount point, with octal escapes (\040 for a space).
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if strings.HasPrefix(p, dir+"/") {
			below = append(below, p)
		}
	}
	// Deepest first: /dev/pts before /dev.
	sort.Slice(below, func(i, j int) bool { return len(below[i]) > len(below[j]) })
	for _, p := range below {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return os.RemoveAll(dir)
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
