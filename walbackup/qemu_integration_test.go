// The QEMU tests run without the race detector: under it, compressing a
// VM's disk image alone takes minutes. make test runs them in a second,
// plain go test (see the Makefile).

//go:build !race

package walbackup_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor/qemu"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

const guestPgbench = "/usr/lib/postgresql/" + testenv.GuestPostgresVersion + "/bin/pgbench"

// The QEMU hypervisor through the job, on a real VM booted from the cached
// Debian image with PostgreSQL 18 and pgbench running inside: a full restore point, then an
// incremental one whose stored size is at most 1.1 times the dirty bytes of
// the bitmap; each holds PostgreSQL's backup_label; the child job ships the
// guest's WAL over SSH meanwhile. Then a point-in-time restore inside a
// VM: the chain restored to a new qcow2, booted with PostgreSQL's start at
// boot masked, and recovered over SSH by the runtime to a time between two
// tables made after the incremental image: it holds the data of the image,
// the first table and not the second. The job runs on the real clock, so
// restore point times and the guest's commit times agree.
func TestQEMURestorePointsOnARealVM(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	// PostgreSQL 18, the npm registry's build baked into the image (the
	// example in examples/qemu-vm runs Debian's 15).
	vm := testenv.StartVM(t, testenv.VMConfig{Major: testenv.GuestReleaseMajor})
	require.True(t, strings.HasPrefix(vm.Psql(t, "SELECT version()"), "PostgreSQL 18."))
	pgbench := fmt.Sprintf("%s -p %d", guestPgbench, vm.Port)
	knownHosts := []string{vm.KnownHostsFile}
	deployer, err := gssh.New(gssh.Config{
		User: "postgres", Auth: []ssh.AuthMethod{ssh.PublicKeys(vm.ClientSigner)}, HostKeyCallback: hostKeysIn(&knownHosts),
		Binaries: map[string]string{"amd64": testenv.BuildRuntime(t)},
		BaseDir:  testenv.GuestTempDir + "/runtimes",
		Conn:     runtime.ConnConfig{Host: "/var/run/postgresql", Port: vm.Port, User: "postgres"},
		Logger:   testenv.Logger(t),
	})
	require.NoError(t, err)
	clk := clock.New()
	hv, err := qemu.New(qemu.Config{
		VMs:     []qemu.VM{{ID: "vm1", QMPSocket: vm.QMPSocket, GuestAgentSocket: vm.QGASocket, SSHAddr: vm.SSHAddr, Node: vm.DiskNode}},
		WorkDir: t.TempDir(), Clock: clk, Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	repo, err := fs.New(fs.Config{Root: t.TempDir()})
	require.NoError(t, err)
	h := &harness{store: smem.New(), events: make(chan walbackup.Event, 1024)}
	h.list = h.store
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1", Address: vm.SSHAddr}},
		LogBackupInterval: walbackup.DefaultLogBackupInterval, WALDir: testenv.GuestTempDir + "/wal", Quiesce: true,
		Hypervisor: hv, Guests: deployer, Repository: repo, Sessions: h.store, Clock: clk,
		Logger: testenv.Logger(t), Observer: func(e walbackup.Event) { h.events <- e },
	})
	require.NoError(t, err)
	h.job = job

	require.NoError(t, job.Enable(ctx))
	h.idle(t)
	vm.Run(t, "postgres", pgbench+" -i -s 5 -q postgres")
	vm.Psql(t, "CHECKPOINT")
	// pgbench keeps writing for the rest of the test, detached from SSH.
	vm.Run(t, "postgres", "setsid nohup "+pgbench+" -c 2 -T 900 postgres </dev/null >/tmp/pgbench.log 2>&1 &")
	time.Sleep(5 * time.Second)

	parent := func() time.Duration {
		start := time.Now()
		require.NoError(t, job.StartParent(ctx))
		took := time.Since(start)
		h.idle(t)
		p, err := session.Latest(ctx, h.store, job.Name(), session.KindParent)
		require.NoError(t, err)
		if !assert.Equal(t, session.StateSuccess, p.State, p.Result) {
			log, _ := h.store.Log(ctx, p.ID, 0, 100)
			t.Logf("parent log: %+v", log)
		}
		return took
	}
	fullTook := parent()
	vm.Psql(t, "CREATE TABLE after_full AS SELECT 42 AS answer")
	time.Sleep(10 * time.Second) // pgbench dirties more blocks
	incTook := parent()
	vm.Psql(t, "CREATE TABLE before_target AS SELECT 1 AS x")
	time.Sleep(time.Second)
	at := vm.Psql(t, "SELECT clock_timestamp()") // the guest's own clock
	time.Sleep(time.Second)
	vm.Psql(t, "CREATE TABLE after_target AS SELECT 1 AS x")
	vm.SwitchWAL(t)
	require.NoError(t, job.Disable(ctx)) // the last ship

	id := vm.Psql(t, "SELECT system_identifier FROM pg_control_system()")
	sysid, err := strconv.ParseUint(id, 10, 64)
	require.NoError(t, err)
	inst := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: sysid}
	rps, err := repository.RestorePoints(ctx, repo, inst, nil)
	require.NoError(t, err)
	require.Len(t, rps, 2)
	full, inc := rps[0], rps[1]
	require.True(t, full.Full)
	require.False(t, inc.Full)
	assert.Equal(t, full.ID, inc.Base)
	for _, m := range rps {
		assert.Contains(t, m.BackupLabel, "START WAL LOCATION: "+m.StartLSN.String())
	}
	dirty, err := strconv.ParseInt(inc.Meta[qemu.MetaDirtyBytes], 10, 64)
	require.NoError(t, err)
	require.Positive(t, dirty)
	t.Logf("full image: %d bytes stored of a %s-byte disk, parent session %v", full.Objects[0].Size, full.Meta[qemu.MetaVirtualSize], fullTook.Round(time.Millisecond))
	t.Logf("incremental image: %d bytes stored for %d dirty bytes (%.3fx), parent session %v",
		inc.Objects[0].Size, dirty, float64(inc.Objects[0].Size)/float64(dirty), incTook.Round(time.Millisecond))
	assert.LessOrEqual(t, float64(inc.Objects[0].Size), 1.1*float64(dirty), "the incremental stores about what changed")

	// Point in time, inside a VM.
	target, err := time.Parse("2006-01-02 15:04:05.999999-07", at)
	require.NoError(t, err)
	plan, err := job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToTime(target)})
	require.NoError(t, err)
	assert.Equal(t, inc.ID, plan.RestorePoint.ID, "the newest restore point before the target")
	require.Len(t, plan.Chain, 2)
	disk := filepath.Join(t.TempDir(), "restored.qcow2")
	start := time.Now()
	require.NoError(t, job.RestoreImage(ctx, plan, disk, nil))
	t.Logf("restore of the full and incremental chain: %v", time.Since(start).Round(time.Millisecond))
	vm2 := testenv.StartVM(t, testenv.VMConfig{Disk: disk, NoPostgres: true, Major: testenv.GuestReleaseMajor})
	assert.Empty(t, strings.TrimSpace(vm2.Run(t, "root", "pgrep -x postgres || true")), "PostgreSQL waits for the restore")
	knownHosts = append(knownHosts, vm2.KnownHostsFile)
	start = time.Now()
	res, err := job.Recover(ctx, plan, walbackup.Machine{ID: "vm2", Address: vm2.SSHAddr}, walbackup.RecoveryOptions{
		DataDir: testenv.GuestReleaseDataDir, BinDir: testenv.GuestReleaseBinDir,
	})
	require.NoError(t, err, "%s", res.Log)
	t.Logf("recovery in the VM to %s: %v, %d WAL files fetched, %d from the spool", at, time.Since(start).Round(time.Millisecond), res.Fetched, res.FromSpool)
	assert.True(t, res.Promoted)
	assert.Equal(t, "500000", vm2.Psql(t, "SELECT count(*) FROM pgbench_accounts"))
	assert.Equal(t, strconv.Itoa(testenv.GuestReleaseMajor), strings.SplitN(vm2.Psql(t, "SHOW server_version"), ".", 2)[0])
	assert.Equal(t, "42", vm2.Psql(t, "SELECT answer FROM after_full"), "the incremental image is applied")
	assert.Equal(t, "t", vm2.Psql(t, "SELECT to_regclass('before_target') IS NOT NULL"), "committed before the target")
	assert.Equal(t, "f", vm2.Psql(t, "SELECT to_regclass('after_target') IS NOT NULL"), "committed after the target")
}

// hostKeysIn verifies host keys against the known_hosts files listed now,
// for VMs that boot later with keys of their own address.
func hostKeysIn(files *[]string) ssh.HostKeyCallback {
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		cb, err := knownhosts.New(*files...)
		if err != nil {
			return err
		}
		return cb(host, remote, key)
	}
}

// A QEMU guest ships its WAL straight into MinIO: the guest's restricted
// user-mode network reaches exactly the store (at 10.0.2.100:9000, to the
// host's loopback), the runtime deployed over SSH bundles and uploads under
// the host's per-object authorisations, and no WAL byte passes through the
// host; what the store holds is what the guest archived.
func TestQEMUGuestShipsDirectlyToMinIO(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	m, bucket, repo := minIOBucketRepo(t, "10.0.2.100:9000")
	_, port, err := net.SplitHostPort(m.Endpoint)
	require.NoError(t, err)
	hostPort, err := strconv.Atoi(port)
	require.NoError(t, err)
	vm := testenv.StartVM(t, testenv.VMConfig{Forwards: []testenv.Forward{{GuestAddr: "10.0.2.100:9000", HostPort: hostPort}}})
	deployer, err := gssh.New(gssh.Config{
		User: "postgres", Auth: []ssh.AuthMethod{ssh.PublicKeys(vm.ClientSigner)}, HostKeyCallback: hostKeysIn(&[]string{vm.KnownHostsFile}),
		Binaries: map[string]string{"amd64": testenv.BuildRuntime(t)},
		BaseDir:  testenv.GuestTempDir + "/runtimes",
		Conn:     runtime.ConnConfig{Host: "/var/run/postgresql", Port: vm.Port, User: "postgres"},
		Logger:   testenv.Logger(t),
	})
	require.NoError(t, err)
	var c hostBytes
	h := &harness{store: smem.New(), events: make(chan walbackup.Event, 1024)}
	h.list = h.store
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1", Address: vm.SSHAddr}},
		LogBackupInterval: walbackup.DefaultLogBackupInterval, WALDir: testenv.GuestTempDir + "/wal",
		Hypervisor: fakeImages(nil, nil), Guests: countingDeployer{deployer, &c}, Repository: countingS3{repo, &c}, Sessions: h.store,
		Clock: clock.New(), Logger: testenv.Logger(t), Observer: func(e walbackup.Event) { h.events <- e },
		Shipping: walbackup.Shipping{Mode: walbackup.ShipDirect},
	})
	require.NoError(t, err)
	h.job = job
	require.NoError(t, job.Enable(ctx))
	h.idle(t)
	vm.Psql(t, "CREATE TABLE shipped AS SELECT g AS n, md5(g::text) AS s FROM generate_series(1, 200000) g")
	var archived []string
	for i := 0; i < 3; i++ {
		archived = append(archived, vm.SwitchWAL(t))
	}
	require.NoError(t, job.Disable(ctx)) // the last ship
	log := sessionLog(t, h, job.ChildName())
	assert.Contains(t, log, "WAL ships directly from the guest to the repository (shipping mode direct", log)
	assert.Regexp(t, `info machine vm1: shipped \d+ files`, log)
	assert.Zero(t, c.segments.Load(), "no segment byte through the host")
	assert.Zero(t, c.bundles.Load(), "no bundle byte put by the host")

	id := vm.Psql(t, "SELECT system_identifier FROM pg_control_system()")
	sysid, err := strconv.ParseUint(id, 10, 64)
	require.NoError(t, err)
	in := stored(t, repo, repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: sysid}, 1)
	for _, name := range archived {
		require.Contains(t, in, name, "%s is in the store: %s", name, log)
		sum := vm.Run(t, "postgres", "sha256sum /var/lib/postgresql/"+testenv.GuestPostgresVersion+"/main/pg_wal/"+name+" 2>/dev/null || true")
		if f := strings.Fields(sum); len(f) > 0 { // still in pg_wal: compare
			assert.Equal(t, f[0], fmt.Sprintf("%x", sha256.Sum256(in[name])), "%s as the guest archived it", name)
		}
	}
	refs, err := repository.Bundles(ctx, repo, repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: sysid}, 1)
	require.NoError(t, err)
	for _, r := range refs {
		_, _, err := repo.StoredChecksum(ctx, r.Object.Name)
		require.NoError(t, err, "%s was uploaded by the guest under an authorisation", r.Object.Name)
	}
	assert.NotEmpty(t, m.Keys(t, bucket))
}
