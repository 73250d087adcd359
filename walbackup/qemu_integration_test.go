package walbackup_test

import (
	"context"
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
// Debian image with pgbench running inside: a full restore point, then an
// incremental one whose stored size is at most 1.1 times the dirty bytes of
// the bitmap; each holds PostgreSQL's backup_label; the chain restored to a
// new qcow2 boots, and PostgreSQL starts with the data of the incremental
// image. The child job ships the guest's WAL over SSH meanwhile.
func TestQEMURestorePointsOnARealVM(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	vm := testenv.StartVM(t, testenv.VMConfig{})
	cb, err := knownhosts.New(vm.KnownHostsFile)
	require.NoError(t, err)
	deployer, err := gssh.New(gssh.Config{
		User: "postgres", Auth: []ssh.AuthMethod{ssh.PublicKeys(vm.ClientSigner)}, HostKeyCallback: cb,
		Binaries: map[string]string{"amd64": testenv.BuildRuntime(t)},
		BaseDir:  testenv.GuestTempDir + "/runtimes",
		Conn:     runtime.ConnConfig{Host: "/var/run/postgresql", Port: 5432, User: "postgres"},
		Logger:   testenv.Logger(t),
	})
	require.NoError(t, err)
	clk := clock.NewMock()
	clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	hv, err := qemu.New(qemu.Config{
		VMs:     []qemu.VM{{ID: "vm1", QMPSocket: vm.QMPSocket, GuestAgentSocket: vm.QGASocket, SSHAddr: vm.SSHAddr, Node: vm.DiskNode}},
		WorkDir: t.TempDir(), Clock: clk, Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	repo, err := fs.New(fs.Config{Root: t.TempDir()})
	require.NoError(t, err)
	h := &harness{clk: clk, store: smem.New(), events: make(chan walbackup.Event, 1024)}
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
	vm.Run(t, "postgres", guestPgbench+" -i -s 5 -q postgres && psql -qc CHECKPOINT")
	// pgbench keeps writing for the rest of the test, detached from SSH.
	vm.Run(t, "postgres", "setsid nohup "+guestPgbench+" -c 2 -T 900 postgres </dev/null >/tmp/pgbench.log 2>&1 &")
	time.Sleep(5 * time.Second)
	h.step(t, walbackup.DefaultLogBackupInterval)

	parent := func() time.Duration {
		clk.Add(time.Minute)
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
	vm.Run(t, "postgres", "psql -qc 'CREATE TABLE after_full AS SELECT 42 AS answer'")
	time.Sleep(10 * time.Second) // pgbench dirties more blocks
	incTook := parent()
	h.step(t, walbackup.DefaultLogBackupInterval)
	vm.Run(t, "postgres", "psql -qc 'CREATE TABLE after_incremental AS SELECT 1 AS x'")
	require.NoError(t, job.Disable(ctx))

	id := vm.Run(t, "postgres", "psql -Atqc 'SELECT system_identifier FROM pg_control_system()'")
	sysid, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
	require.NoError(t, err)
	inst := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: sysid}
	rps, err := repository.RestorePoints(ctx, repo, inst)
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

	_, chain, err := walbackup.ImageChain(ctx, repo, inst, inc.ID)
	require.NoError(t, err)
	target := filepath.Join(t.TempDir(), "restored.qcow2")
	start := time.Now()
	require.NoError(t, hv.Restore(ctx, chain, repo, target, nil))
	t.Logf("restore of the full and incremental chain: %v", time.Since(start).Round(time.Millisecond))

	vm2 := testenv.StartVM(t, testenv.VMConfig{Disk: target})
	psql := func(sql string) string {
		return strings.TrimSpace(vm2.Run(t, "postgres", "psql -Atqc \""+sql+"\""))
	}
	assert.Equal(t, "500000", psql("SELECT count(*) FROM pgbench_accounts"))
	assert.Equal(t, "42", psql("SELECT answer FROM after_full"), "the incremental image is applied")
	assert.Equal(t, "f", psql("SELECT to_regclass('after_incremental') IS NOT NULL"), "nothing after the incremental image")
}
