package walbackup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

// A hypervisor that images whole machines (disk images) takes one image
// of a machine with several instances, every instance in backup mode
// around its snapshot, stored once under the machine's shared image folder
// and named by each instance's restore point (its own backup label, WAL
// and chain). The next image builds on it; an instance whose newest
// restore point is not on the shared image (its image failed) makes the
// next one full. Each instance restores on its own, expiry removes a
// shared image only once no restore point of any instance uses it, and a
// shared image no restore point ever named (a parent that failed) goes
// after its name is claimed in each chain.
func TestSharedImageOfSeveralInstances(t *testing.T) {
	ctx := context.Background()
	a, b := fakeInstance(101, 150004, "/pg/a"), fakeInstance(202, 170002, "/pg/b")
	h := twoInstances(t, a, b, func(c *walbackup.Config) { c.Retention = walbackup.Retention{RestorePoints: 2} })
	h.hv.SetIncremental(true)
	instA := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 101}
	instB := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 202}
	inBackup := map[string][2]int{} // backups running in a and b at each snapshot
	h.hv.SetFault(func(op hypervisortest.Op, machine string) error {
		if op == hypervisortest.OpSnapshot {
			inBackup[fmt.Sprint(len(inBackup))] = [2]int{a.BackupsRunning(), b.BackupsRunning()}
		}
		return nil
	})
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)

	parent := func(disk string) session.Session {
		t.Helper()
		h.hv.SetDisk("vm1", []byte(disk))
		a.SwitchWAL([]byte("a before " + disk))
		b.SwitchWAL([]byte("b before " + disk))
		h.step(t, time.Minute)
		require.NoError(t, h.job.StartParent(ctx))
		h.idle(t)
		return h.sessions(t, "Daily DB Job")[0]
	}
	a.SwitchWAL([]byte("a is ahead")) // the backups start at other places
	p1 := parent("disk 1")
	require.Equal(t, session.StateSuccess, p1.State, p1.Result)
	assert.Equal(t, 1, h.hv.Snapshots(), "one image of the machine")
	assert.Equal(t, [2]int{1, 1}, inBackup["0"], "both instances in backup mode around the snapshot")
	assert.Zero(t, a.BackupsRunning()+b.BackupsRunning(), "backup mode ended")
	rpsA, rpsB := restorePoints(t, h, instA), restorePoints(t, h, instB)
	require.Len(t, rpsA, 1)
	require.Len(t, rpsB, 1)
	ra, rb := rpsA[0], rpsB[0]
	assert.Equal(t, ra.ID, rb.ID, "one restore point id, the image's")
	assert.True(t, ra.SharedImage && rb.SharedImage && ra.Full && rb.Full)
	assert.NotEqual(t, ra.BackupLabel, rb.BackupLabel, "each instance's own backup")
	assert.Equal(t, "/pg/a", ra.DataDir)
	assert.Equal(t, "/pg/b", rb.DataDir)
	assert.Equal(t, ra.Objects, rb.Objects)
	objects := listed(t, h, "jobs/")
	image := repository.SharedImages("Daily DB Job", "vm1") + ra.ID + "/" + hypervisortest.DiskObject
	assert.Contains(t, objects, image, "the image is stored once, in the machine's folder")
	for _, inst := range []repository.Instance{instA, instB} {
		assert.Equal(t, []string{inst.ManifestName(ra.ID)}, prefixed(objects, inst.RestorePoint(ra.ID)+"/"), "a restore point holds only its manifest")
	}

	p2 := parent("disk 2")
	require.Equal(t, session.StateSuccess, p2.State, p2.Result)
	assert.Equal(t, [2]int{1, 1}, inBackup["1"])
	rpsA, rpsB = restorePoints(t, h, instA), restorePoints(t, h, instB)
	require.Len(t, rpsA, 2)
	assert.False(t, rpsA[1].Full, "the next image builds on the shared one")
	assert.Equal(t, ra.ID, rpsA[1].Base)
	assert.Equal(t, rpsA[1].ID, rpsB[1].ID)
	assert.Equal(t, ra.ID, rpsB[1].Base)
	id2 := rpsA[1].ID

	// b's image fails: a's restore point is still taken, and the next
	// image is full, since b's newest is not on a's.
	b.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpBackupStart {
			return errors.New("backup refused (injected)")
		}
		return nil
	})
	p3 := parent("disk 3")
	assert.Equal(t, session.StateFailed, p3.State)
	assert.Contains(t, p3.Result, "vm1 instance /pg/b")
	assert.Equal(t, [2]int{1, 0}, inBackup["2"])
	b.SetFault(nil)
	rpsA = restorePoints(t, h, instA)
	require.Len(t, rpsA, 3, "an incremental keeps its bases")
	assert.False(t, rpsA[2].Full)
	assert.Len(t, restorePoints(t, h, instB), 2)
	p4 := parent("disk 4")
	require.Equal(t, session.StateSuccess, p4.State, p4.Result)
	rpsA, rpsB = restorePoints(t, h, instA), restorePoints(t, h, instB)
	require.True(t, rpsA[len(rpsA)-1].Full, "full: the instances' newest restore points were on two images")
	require.True(t, rpsB[len(rpsB)-1].Full)

	// A restore of b holds its second restore point while a fifth parent
	// session runs: retention takes a's chain to its last two, b's keeps
	// what the restore holds, and of the images a's chain no longer names
	// only those b's held restore points use stay.
	held, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", DataDir: "/pg/b", RestorePoint: id2, Target: walbackup.Latest()})
	require.NoError(t, err)
	hold, err := h.job.Hold(ctx, held, "restore")
	require.NoError(t, err)
	p5 := parent("disk 5")
	require.Equal(t, session.StateSuccess, p5.State, p5.Result)
	rpsA, rpsB = restorePoints(t, h, instA), restorePoints(t, h, instB)
	require.Len(t, rpsA, 2)
	require.Len(t, rpsB, 4, "two kept, two held")
	assert.False(t, rpsA[1].Full, "on the fourth, full image")
	assert.Equal(t, rpsA[0].ID, rpsB[2].ID)
	assert.Equal(t, []string{ra.ID, id2, rpsA[0].ID, rpsA[1].ID}, sharedImages(t, h), "the third image, a's alone, is gone")
	target := filepath.Join(t.TempDir(), "held")
	require.NoError(t, h.job.RestoreImage(ctx, held, target, nil))
	got, _ := h.hv.Restored(target)
	assert.Equal(t, "disk 2", string(got))
	hold.Release(ctx)
	dry, err := h.job.ExpireDryRun(ctx)
	require.NoError(t, err)
	exp, err := h.job.Expire(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{ra.ID, id2}, exp.Images, "b's released restore points took the last images that no one else used")
	assert.Equal(t, exp, dry, "the dry run says what expiry does")
	assert.Equal(t, []string{rpsA[0].ID, rpsA[1].ID}, sharedImages(t, h), "released: only what the restore points use")
	rpsB = restorePoints(t, h, instB)
	require.Len(t, rpsB, 2)

	// Each instance restores on its own.
	for _, tc := range []struct {
		dir, rp, want string
	}{{"/pg/a", "", "disk 5"}, {"/pg/b", "", "disk 5"}, {"/pg/b", rpsB[0].ID, "disk 4"}} {
		plan, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", DataDir: tc.dir, RestorePoint: tc.rp, Target: walbackup.Latest()})
		require.NoError(t, err, tc.dir)
		target := filepath.Join(t.TempDir(), "disk")
		require.NoError(t, h.job.RestoreImage(ctx, plan, target, nil), tc.dir)
		got, _ := h.hv.Restored(target)
		assert.Equal(t, tc.want, string(got), "%s %s", tc.dir, tc.rp)
	}
	rep, err := h.job.Verify(ctx)
	require.NoError(t, err)
	assert.True(t, rep.OK(), "%v", rep.Problems)

	// A shared image no restore point named (its parent died before any
	// commit) is removed by the next expiry, its name claimed in each chain.
	orphan := repository.NewRestorePointID(h.clk.Now().Add(-time.Hour))
	require.NoError(t, h.repo.Put(ctx, repository.SharedImages("Daily DB Job", "vm1")+orphan+"/"+hypervisortest.DiskObject, bytes.NewReader([]byte("left"))))
	exp, err = h.job.Expire(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{orphan}, exp.Images)
	for _, inst := range []repository.Instance{instA, instB} {
		_, err := repository.ReadManifest(ctx, h.repo, inst, orphan, nil)
		assert.ErrorIs(t, err, repository.ErrAbandoned, "a late writer cannot commit a restore point naming it")
	}
	assert.Empty(t, prefixed(listed(t, h, "jobs/"), repository.SharedImages("Daily DB Job", "vm1")+orphan))
}

func restorePoints(t *testing.T, h *harness, inst repository.Instance) []*repository.Manifest {
	t.Helper()
	rps, err := repository.RestorePoints(context.Background(), h.repo, inst, nil)
	require.NoError(t, err)
	return rps
}

func listed(t *testing.T, h *harness, prefix string) []string {
	t.Helper()
	var out []string
	require.NoError(t, h.repo.List(context.Background(), prefix, func(o repository.Object) error {
		out = append(out, o.Name)
		return nil
	}))
	return out
}

func prefixed(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// sharedImages lists the ids of vm1's shared images, sorted.
func sharedImages(t *testing.T, h *harness) []string {
	t.Helper()
	folder := repository.SharedImages("Daily DB Job", "vm1")
	var out []string
	for _, o := range listed(t, h, folder) {
		id, _, _ := strings.Cut(strings.TrimPrefix(o, folder), "/")
		if len(out) == 0 || out[len(out)-1] != id {
			out = append(out, id)
		}
	}
	return out
}
