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
// Debian image with two PostgreSQL instances of two releases running side
// by side (the npm registry's 18 with pgbench running inside, and
// Debian's 15), both listed in the machine's Instances: one image of the
// VM per parent session, both instances in backup mode around it, stored
// once and named by both instances' restore points (each with its own
// backup_label and WAL chain); a full restore point, then an incremental
// one whose stored size is at most 1.1 times the dirty bytes of the
// bitmap; the child job ships both instances' WAL over SSH meanwhile.
// Then a point-in-time restore of each instance inside one VM: the chain
// restored to a new qcow2, booted with PostgreSQL's start at boot masked,
// and each instance recovered over SSH by the runtime to a time between
// two tables made after the incremental image: each holds the data of the
// image, its first table and not its second. The job runs on the real
// clock, so restore point times and the guest's commit times agree.
func TestQEMURestorePointsOnARealVM(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	// PostgreSQL 18, the npm registry's build baked into the image (the
	// example in examples/qemu-vm runs Debian's 15).
	vm := testenv.StartVM(t, testenv.VMConfig{Major: testenv.GuestReleaseMajor})
	require.True(t, strings.HasPrefix(vm.Psql(t, "SELECT version()"), "PostgreSQL 18."))
	// Debian's cluster beside it (its unit is masked at boot for this VM).
	vm.Run(t, "postgres", debianPgCtl+" -w -l /tmp/pg15.log start")
	psql15 := func(sql string) string {
		return strings.TrimSpace(vm.Run(t, "postgres", fmt.Sprintf("psql -p 5432 -Atqc \"%s\"", sql)))
	}
	require.True(t, strings.HasPrefix(psql15("SELECT version()"), "PostgreSQL "+testenv.GuestPostgresVersion+"."))
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
	repoRoot := t.TempDir()
	repo, err := fs.New(fs.Config{Root: repoRoot})
	require.NoError(t, err)
	h := &harness{store: smem.New(), events: make(chan walbackup.Event, 1024)}
	h.list = h.store
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1", Address: vm.SSHAddr, Instances: []string{testenv.GuestReleaseDataDir, debianDataDir}}},
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
	psql15("CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 1000) g")
	// pgbench keeps writing for the rest of the test, detached from SSH, at
	// a bounded rate: unthrottled, it kept the emulated CPUs (and with them
	// the host's two cores) busy while the other VMs of the suite restored.
	vm.Run(t, "postgres", "setsid nohup "+pgbench+" -c 2 -R 20 -T 900 postgres </dev/null >/tmp/pgbench.log 2>&1 &")
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
	psql15("INSERT INTO items SELECT g FROM generate_series(1001, 1500) g")
	time.Sleep(10 * time.Second) // pgbench dirties more blocks
	incTook := parent()
	vm.Psql(t, "CREATE TABLE before_target AS SELECT 1 AS x")
	psql15("INSERT INTO items SELECT g FROM generate_series(1501, 1700) g")
	time.Sleep(time.Second)
	at := vm.Psql(t, "SELECT clock_timestamp()") // the guest's own clock
	time.Sleep(time.Second)
	vm.Psql(t, "CREATE TABLE after_target AS SELECT 1 AS x")
	psql15("INSERT INTO items SELECT g FROM generate_series(1701, 2000) g")
	vm.SwitchWAL(t)
	last15 := psql15("SELECT pg_walfile_name(pg_switch_wal())")
	require.Eventually(t, func() bool { return psql15("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= last15 },
		2*time.Minute, 200*time.Millisecond, "15 archived %s", last15)
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
	id15, err := strconv.ParseUint(psql15("SELECT system_identifier FROM pg_control_system()"), 10, 64)
	require.NoError(t, err)
	inst15 := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: id15}
	rps15, err := repository.RestorePoints(ctx, repo, inst15, nil)
	require.NoError(t, err)
	require.Len(t, rps15, 2)
	for i, m := range append(rps, rps15...) {
		assert.Contains(t, m.BackupLabel, "START WAL LOCATION: "+m.StartLSN.String())
		assert.True(t, m.SharedImage, "one image of the VM for both instances")
		assert.Equal(t, rps[i%2].ID, m.ID)
		assert.Equal(t, rps[i%2].Objects, m.Objects)
	}
	assert.Equal(t, debianDataDir, rps15[0].DataDir)
	assert.NotEqual(t, rps[1].BackupLabel, rps15[1].BackupLabel, "each instance's own backup")
	var stored []string
	require.NoError(t, repo.List(ctx, "jobs/", func(o repository.Object) error {
		if strings.HasSuffix(o.Name, full.Objects[0].Name) {
			stored = append(stored, o.Name)
		}
		return nil
	}))
	assert.Equal(t, []string{inst.SharedImage(full.ID) + "/" + full.Objects[0].Name, inst.SharedImage(inc.ID) + "/" + inc.Objects[0].Name}, stored,
		"each image stored once, in the machine's folder")
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
	plan, err := job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", DataDir: testenv.GuestReleaseDataDir, Target: walbackup.ToTime(target)})
	require.NoError(t, err)
	assert.Equal(t, inc.ID, plan.RestorePoint.ID, "the newest restore point before the target")
	require.Len(t, plan.Chain, 2)
	plan15, err := job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", DataDir: debianDataDir, Target: walbackup.ToTime(target)})
	require.NoError(t, err)
	assert.Equal(t, id15, plan15.Instance.SystemID)
	require.Len(t, plan15.Chain, 2)
	for i := range plan.Chain {
		assert.Equal(t, plan.Chain[i].Objects, plan15.Chain[i].Objects, "one disk holds both instances")
	}
	disk := filepath.Join(t.TempDir(), "restored.qcow2")
	start := time.Now()
	restoreStart := start
	require.NoError(t, job.RestoreImage(ctx, plan, disk, nil))
	restoreImage := time.Since(start)
	t.Logf("restore of the full and incremental chain: %v", restoreImage.Round(time.Millisecond))
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
	restoreFirstQuery := time.Since(restoreStart)
	assert.Equal(t, strconv.Itoa(testenv.GuestReleaseMajor), strings.SplitN(vm2.Psql(t, "SHOW server_version"), ".", 2)[0])
	assert.Equal(t, "42", vm2.Psql(t, "SELECT answer FROM after_full"), "the incremental image is applied")
	assert.Equal(t, "t", vm2.Psql(t, "SELECT to_regclass('before_target') IS NOT NULL"), "committed before the target")
	assert.Equal(t, "f", vm2.Psql(t, "SELECT to_regclass('after_target') IS NOT NULL"), "committed after the target")

	// Debian's cluster from the same disk, to the same time, on its own.
	res15, err := job.Recover(ctx, plan15, walbackup.Machine{ID: "vm2", Address: vm2.SSHAddr}, walbackup.RecoveryOptions{
		DataDir: debianDataDir, ConfigFile: debianConfig, BinDir: "/usr/lib/postgresql/" + testenv.GuestPostgresVersion + "/bin",
	})
	require.NoError(t, err, "%s", res15.Log)
	assert.True(t, res15.Promoted)
	got15 := strings.TrimSpace(vm2.Run(t, "postgres", `psql -p 5432 -Atqc "SELECT count(*), min(id), max(id), count(DISTINCT id) FROM items"`))
	assert.Equal(t, "1700|1|1700|1700", got15, "exactly the rows committed before the target")
	assert.Equal(t, "500000", vm2.Psql(t, "SELECT count(*) FROM pgbench_accounts"), "the 18 instance runs on beside it")
	vm2.Stop(t)

	// Published: the same point in time straight from the stored chain,
	// under a copy-on-write overlay, in a third VM; its writes never reach
	// the backup, and Unpublish leaves nothing.
	sums := treeSums(t, repoRoot)
	cache := filepath.Join(t.TempDir(), "published")
	start = time.Now()
	pub, err := job.Publish(ctx, walbackup.PublishRequest{Machine: "vm1", DataDir: testenv.GuestReleaseDataDir, Target: walbackup.ToTime(target),
		Cache: cache})
	require.NoError(t, err)
	publishImage := time.Since(start)
	vm3 := testenv.StartVM(t, testenv.VMConfig{Disk: pub.Disk, NoPostgres: true, Major: testenv.GuestReleaseMajor})
	knownHosts = append(knownHosts, vm3.KnownHostsFile)
	res3, err := job.Recover(ctx, pub.Plan, walbackup.Machine{ID: "vm3", Address: vm3.SSHAddr}, walbackup.RecoveryOptions{
		DataDir: testenv.GuestReleaseDataDir, BinDir: testenv.GuestReleaseBinDir,
	})
	require.NoError(t, err, "%s", res3.Log)
	assert.Equal(t, "500000", vm3.Psql(t, "SELECT count(*) FROM pgbench_accounts"))
	publishFirstQuery := time.Since(start)
	assert.Equal(t, "42", vm3.Psql(t, "SELECT answer FROM after_full"))
	assert.Equal(t, "t", vm3.Psql(t, "SELECT to_regclass('before_target') IS NOT NULL"))
	assert.Equal(t, "f", vm3.Psql(t, "SELECT to_regclass('after_target') IS NOT NULL"))
	vm3.Psql(t, "CREATE TABLE written_while_published AS SELECT g FROM generate_series(1, 100000) g")
	assert.Equal(t, sums, treeSums(t, repoRoot), "the backup is only read")
	vm3.Stop(t)
	require.NoError(t, job.Unpublish(ctx, cache))
	assert.NoDirExists(t, cache)
	assert.Equal(t, sums, treeSums(t, repoRoot))
	t.Logf("time to first query of the same point in time: restore %v (image %v), publish %v (image %v)",
		restoreFirstQuery.Round(time.Millisecond), restoreImage.Round(time.Millisecond),
		publishFirstQuery.Round(time.Millisecond), publishImage.Round(time.Millisecond))
}

// debianDataDir and debianPgCtl are the guest image's Debian cluster (15)
// and how to start it by hand when its unit is masked.
const (
	debianDataDir = "/var/lib/postgresql/" + testenv.GuestPostgresVersion + "/main"
	debianConfig  = "/etc/postgresql/" + testenv.GuestPostgresVersion + "/main/postgresql.conf"
	debianPgCtl   = "/usr/lib/postgresql/" + testenv.GuestPostgresVersion + "/bin/pg_ctl -D " + debianDataDir + " -o '-c config_file=" + debianConfig + "'"
)

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
