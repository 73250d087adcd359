package walbackup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// perInstance is the fake hypervisor as one that images an instance at a
// time (hypervisor.InstanceImager).
type perInstance struct{ *hypervisortest.Fake }

func (perInstance) ImagesInstances() {}

func fakeInstance(systemID uint64, version int, dataDir string) *guesttest.Guest {
	return guesttest.NewGuest(guest.Instance{Version: version, WALLevel: "replica", ArchiveMode: "on", SystemID: systemID,
		Timeline: 1, WALSegmentSize: 16 << 20, DataDir: dataDir})
}

// A machine with AllInstances: each session finds the instances the guest
// runs now and ships each into its own chain, with its own WAL folder and
// counters; a parent session takes a restore point of each; an instance
// that appears is shipped from the next session on (no restore point yet,
// said so), and one that stops is reported, its chain kept.
func TestAllInstancesFoundEachSession(t *testing.T) {
	ctx := context.Background()
	a, b := fakeInstance(101, 150004, "/var/lib/postgresql/15/main"), fakeInstance(202, 170002, "/var/lib/postgresql/17/main")
	guests := map[string]*guesttest.Guest{
		guesttest.InstanceKey("vm1", a.Instance().DataDir): a,
		guesttest.InstanceKey("vm1", b.Instance().DataDir): b,
	}
	d := guesttest.NewDeployer(guests)
	h := newHarness(t, func(c *walbackup.Config) {
		c.Machines = []walbackup.Machine{{ID: "vm1", AllInstances: true}}
		c.Guests = d
		c.Hypervisor = perInstance{c.Hypervisor.(*hypervisortest.Fake)}
		c.WALDir = "/wal"
	})
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	add := func(g *guesttest.Guest, n int) {
		for i := 0; i < n; i++ {
			g.SwitchWAL([]byte(fmt.Sprintf("%d: segment %d", g.Instance().SystemID, i)))
		}
	}
	add(a, 2)
	add(b, 3)
	h.step(t, 15*time.Minute)
	for _, g := range []*guesttest.Guest{a, b} {
		assert.Empty(t, g.Waiting(), "%s shipped", g.Instance().DataDir)
		assert.Equal(t, walbackup.InstanceWALDir("/wal", g.Instance().DataDir), g.ArchiveConfig().Dir, "a WAL folder of its own")
	}
	assert.NotEqual(t, a.ArchiveConfig().Dir, b.ArchiveConfig().Dir)
	instA := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 101}
	instB := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 202}
	assert.Len(t, stored(t, h.repo, instA, 1), 2, "each chain holds its instance's WAL")
	assert.Len(t, stored(t, h.repo, instB, 1), 3)

	cur := h.sessions(t, h.job.ChildName())[0]
	require.Len(t, cur.Counters.Instances, 2)
	for i, g := range []*guesttest.Guest{a, b} {
		ic := cur.Counters.Instances[i]
		assert.Equal(t, g.Instance().DataDir, ic.DataDir)
		assert.Equal(t, g.Instance().SystemID, ic.SystemID)
	}
	assert.Equal(t, cur.Counters.Instances[0].Files+cur.Counters.Instances[1].Files, cur.Counters.Files, "the sum of the instances'")

	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	for _, g := range []*guesttest.Guest{a, b} {
		id, err := h.job.SystemIDOf(ctx, "vm1", g.Instance().DataDir)
		require.NoError(t, err, "a restore point of %s", g.Instance().DataDir)
		assert.Equal(t, g.Instance().SystemID, id)
	}

	// b stops, c appears; the next parent session ends the child session
	// and starts one that finds what runs now.
	c := fakeInstance(303, 180001, "/srv/pg18")
	d.Set(guesttest.InstanceKey("vm1", b.Instance().DataDir), nil)
	d.Set(guesttest.InstanceKey("vm1", c.Instance().DataDir), c)
	add(c, 2)
	h.step(t, time.Minute)
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	log := sessionLog(t, h, h.job.ChildName())
	assert.Contains(t, log, "machine vm1: 2 PostgreSQL instances found: /srv/pg18, /var/lib/postgresql/15/main")
	assert.Contains(t, log, "machine vm1: instance /var/lib/postgresql/17/main (system identifier 202) no longer runs")
	inC := stored(t, h.repo, repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 303}, 1)
	assert.Contains(t, inC, "000000010000000000000002", "the new one shipped")
	parents := h.sessions(t, "Daily DB Job")
	assert.Equal(t, session.StateSuccess, parents[0].State, "restore points of the instances running")
	id, err := h.job.SystemIDOf(ctx, "vm1", "/srv/pg18")
	require.NoError(t, err)
	assert.Equal(t, uint64(303), id)
	_, err = h.job.SystemIDOf(ctx, "vm1", b.Instance().DataDir)
	require.NoError(t, err, "the stopped one's chain is kept")
}

// The two ways of naming a machine's instances exclude each other, and a
// data directory must be absolute and clean.
func TestInstancesRefused(t *testing.T) {
	base := func() walbackup.Config {
		return walbackup.Config{Name: "j", LogBackupInterval: 15 * time.Minute,
			Hypervisor: hypervisortest.New(nil, hypervisor.Machine{ID: "vm1"}), Guests: guesttest.NewDeployer(nil),
			Repository: memory.New(), Sessions: smem.New()}
	}
	for name, tc := range map[string]struct {
		m    walbackup.Machine
		want string
	}{
		"all and list": {walbackup.Machine{ID: "vm1", Instances: []string{"/a"}, AllInstances: true}, "both set"},
		"relative":     {walbackup.Machine{ID: "vm1", Instances: []string{"a/b"}}, "absolute, clean"},
		"unclean":      {walbackup.Machine{ID: "vm1", Instances: []string{"/a/../b"}}, "absolute, clean"},
		"twice":        {walbackup.Machine{ID: "vm1", Instances: []string{"/a", "/a"}}, "listed twice"},
		"long":         {walbackup.Machine{ID: "vm1", Instances: []string{"/" + strings.Repeat("d", session.MaxNameLen)}}, "at most 512 bytes"},
		"too many":     {walbackup.Machine{ID: "vm1", Instances: manyDirs(session.MaxInstances + 1)}, "instances in one job, at most"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base()
			cfg.Machines = []walbackup.Machine{tc.m}
			_, err := walbackup.NewJob(cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// A copy of an instance (another data directory with the same system
// identifier: a standby, a cloned directory) never ships into the
// original's chain: refused beside it in a session, and refused on its
// own when the original is out of reach, because the chain's restore
// points name the original; the parent takes no restore point of it.
func TestCopyOfAnInstanceRefused(t *testing.T) {
	ctx := context.Background()
	a, b := fakeInstance(101, 150004, "/pg/a"), fakeInstance(101, 150004, "/pg/b")
	h := twoInstances(t, a, b, func(c *walbackup.Config) { c.Hypervisor = perInstance{c.Hypervisor.(*hypervisortest.Fake)} })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	assert.Contains(t, sessionLog(t, h, h.job.ChildName()), "/pg/b is a copy of instance /pg/a (system identifier 101)")
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	parents := h.sessions(t, "Daily DB Job")
	assert.Equal(t, session.StateFailed, parents[0].State)
	assert.Contains(t, parents[0].Result, "vm1 instance /pg/b")

	// The original out of reach: the copy alone is still refused.
	a.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpDeploy {
			return errors.New("unreachable (injected)")
		}
		return nil
	})
	b.SwitchWAL([]byte("the copy's own WAL"))
	h.step(t, time.Minute)
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	h.step(t, 15*time.Minute)
	log := sessionLog(t, h, h.job.ChildName())
	assert.Contains(t, log, "/pg/b is a copy of instance /pg/a (system identifier 101)")
	for name, content := range stored(t, h.repo, repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 101}, 1) {
		assert.NotEqual(t, "the copy's own WAL", string(content), "%s: the copy's WAL is not in the chain", name)
	}
	assert.NotEmpty(t, b.Waiting(), "the copy's WAL stays in its guest")
}

// twoInstances is the harness with machine vm1 running instances a at
// /pg/a and b at /pg/b, both listed.
func twoInstances(t *testing.T, a, b *guesttest.Guest, tweak func(*walbackup.Config)) *harness {
	d := guesttest.NewDeployer(map[string]*guesttest.Guest{guesttest.InstanceKey("vm1", "/pg/a"): a, guesttest.InstanceKey("vm1", "/pg/b"): b})
	return newHarness(t, func(c *walbackup.Config) {
		c.Machines = []walbackup.Machine{{ID: "vm1", Instances: []string{"/pg/a", "/pg/b"}}}
		c.Guests = d
		tweak(c)
	})
}

func manyDirs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/pg/%d", i)
	}
	return out
}
