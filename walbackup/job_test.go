package walbackup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

type harness struct {
	clk    *clock.Mock
	job    *walbackup.Job
	guest  *guesttest.Guest
	hv     *hypervisortest.Fake
	store  *smem.Store
	repo   *memory.Repo
	events chan walbackup.Event
	list   session.Store // where sessions() looks
	next   time.Time     // when the job said it wakes next
	seq    int
}

func newHarness(t *testing.T, tweaks ...func(*walbackup.Config)) *harness {
	t.Helper()
	h := &harness{clk: clock.NewMock(), store: smem.New(), repo: memory.New(), events: make(chan walbackup.Event, 1024)}
	h.list = h.store
	h.clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)) // a Wednesday
	h.guest = newFakeGuest(42)
	h.hv = hypervisortest.New(h.clk, hypervisor.Machine{ID: "vm1"})
	cfg := walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1"}}, Schedule: walbackup.Daily(22, 0),
		LogBackupInterval: 15 * time.Minute, Hypervisor: h.hv,
		Guests:     guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": h.guest}),
		Repository: h.repo, Sessions: h.store, Clock: h.clk, Logger: testenv.Logger(t),
		Observer: func(e walbackup.Event) { h.events <- e },
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	job, err := walbackup.NewJob(cfg)
	require.NoError(t, err)
	h.job = job
	return h
}

// idle waits until the job has done all that is due, collecting events.
func (h *harness) idle(t *testing.T) []walbackup.Event {
	t.Helper()
	var got []walbackup.Event
	for {
		select {
		case e := <-h.events:
			if e.Kind == walbackup.EventIdle {
				h.next = e.Next
				return got
			}
			got = append(got, e)
		case <-time.After(10 * time.Second):
			t.Fatal("the job never became idle")
		}
	}
}

// step advances virtual time by d, stopping at each time the job said it
// would wake (an interval, a retry, a parent run) and waiting for it to
// settle there, so every wake-up runs at its own virtual time.
func (h *harness) step(t *testing.T, d time.Duration) []walbackup.Event {
	t.Helper()
	target := h.clk.Now().Add(d)
	var got []walbackup.Event
	for !h.next.IsZero() && !h.next.After(target) {
		h.clk.Set(h.next)
		got = append(got, h.idle(t)...)
	}
	h.clk.Set(target)
	return got
}

func (h *harness) addWAL() {
	h.seq++
	h.guest.SwitchSegment([]byte(fmt.Sprintf("segment %d", h.seq)))
}

func (h *harness) sessions(t *testing.T, job string) []session.Session {
	t.Helper()
	p, err := h.list.List(context.Background(), session.Query{Job: job})
	require.NoError(t, err)
	return p.Sessions // newest first
}

func TestChildSessionLifecycle(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	assert.Equal(t, "Daily DB Job PostgreSQL Log Backup", h.job.ChildName())
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	children := h.sessions(t, h.job.ChildName())
	require.Len(t, children, 1, "enabling starts child session 1")
	assert.Equal(t, session.StateWorking, children[0].State)
	assert.Equal(t, 1, h.guest.Installed(), "the runtime is deployed")

	// Intervals ship what arrived.
	for i := 0; i < 4; i++ {
		h.addWAL()
		h.addWAL()
		evs := h.step(t, 15*time.Minute)
		require.NotEmpty(t, evs)
		assert.Equal(t, walbackup.EventBatchShipped, evs[0].Kind)
		assert.Equal(t, 2, evs[0].Files)
		assert.Zero(t, evs[0].Lag, "virtual time stands still while the fakes ship")
		assert.Empty(t, h.guest.Waiting())
	}
	c1 := h.sessions(t, h.job.ChildName())[0]
	assert.Equal(t, int64(8), c1.Counters.Files)
	assert.Equal(t, "000000010000000000000001", c1.Counters.FirstSegment)
	assert.Equal(t, "000000010000000000000008", c1.Counters.LastSegment)
	assert.Equal(t, "0/1000000", c1.Counters.FirstLSN.String(), "the LSN range starts with segment 1")
	assert.Equal(t, "0/9000000", c1.Counters.LastLSN.String(), "and ends where segment 8 ends")
	log, err := h.store.Log(ctx, c1.ID, 0, 100)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(log), 5, "a log entry per interval")

	// Up to 22:00: the parent run ends child 1 first and child 2 follows it.
	var order []string
	for h.clk.Now().Before(time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)) {
		for _, e := range h.step(t, 15*time.Minute) {
			if e.Kind == walbackup.EventSessionStarted || e.Kind == walbackup.EventSessionEnded {
				order = append(order, fmt.Sprintf("%s %s", e.Session.Kind, e.Kind))
			}
		}
	}
	assert.Equal(t, []string{"child session_ended", "parent session_started", "parent session_ended", "child session_started"}, order)
	parents := h.sessions(t, "Daily DB Job")
	require.Len(t, parents, 1)
	children = h.sessions(t, h.job.ChildName())
	require.Len(t, children, 2)
	c2, c1 := children[0], children[1]
	assert.True(t, c1.State.Final())
	assert.False(t, c1.End.After(parents[0].Start), "child 1 ended before the parent started")
	assert.False(t, c2.Start.Before(parents[0].End), "child 2 started after the parent")
	assert.Equal(t, parents[0].ID, c2.ParentID)
	assert.Equal(t, session.StateSuccess, parents[0].State)
	assert.Equal(t, 1, h.guest.Installed(), "child 1's and the parent's runtimes were uninstalled, child 2's deployed")
	assert.Equal(t, 3, h.guest.Deploys(), "child 1, the parent, child 2")
	assert.Zero(t, h.guest.BackupsRunning(), "backup mode ended")

	// Disable ends the session and uninstalls the runtime before returning.
	h.addWAL()
	require.NoError(t, h.job.Disable(ctx))
	assert.Equal(t, 0, h.guest.Installed())
	assert.Empty(t, h.guest.Waiting(), "one last ship when the session ends")
	c2 = h.sessions(t, h.job.ChildName())[0]
	assert.Equal(t, session.StateSuccess, c2.State)
	assert.Contains(t, c2.Result, "disabled")
	require.ErrorIs(t, h.job.StartParent(ctx), walbackup.ErrNotEnabled)
}

func TestParentFailureWarnsNextChild(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.hv.SetFault(func(op hypervisortest.Op, _ string) error {
		if op == hypervisortest.OpSnapshot {
			return errors.New("snapshot failed")
		}
		return nil
	})
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	parent := h.sessions(t, "Daily DB Job")[0]
	assert.Equal(t, session.StateFailed, parent.State)
	require.NoError(t, h.job.Disable(ctx))
	var child session.Session
	for _, c := range h.sessions(t, h.job.ChildName()) {
		if c.ParentID == parent.ID {
			child = c // virtual time stood still: pick by parent, not by start
		}
	}
	require.NotEmpty(t, child.ID, "a child session follows the failed parent")
	assert.Equal(t, session.StateWarning, child.State, "WAL after a failed image has no restore point")
	log, err := h.store.Log(ctx, child.ID, 0, 100)
	require.NoError(t, err)
	var warned bool
	for _, e := range log {
		warned = warned || e.Severity == session.SeverityWarning
	}
	assert.True(t, warned)
}

func TestADayOfVirtualTime(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	start := time.Now()
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	for i := 0; i < 96; i++ {
		h.addWAL()
		h.step(t, 15*time.Minute)
	}
	require.NoError(t, h.job.Disable(ctx))
	t.Logf("a day of virtual time took %v of real time", time.Since(start))
	assert.Len(t, h.sessions(t, "Daily DB Job"), 1, "one parent run a day")
	var shipped int64
	for _, c := range h.sessions(t, h.job.ChildName()) {
		shipped += c.Counters.Files
	}
	assert.Equal(t, int64(96), shipped, "every segment shipped")
}

func TestIntervalLimits(t *testing.T) {
	base := walbackup.Config{Name: "j", Machines: []walbackup.Machine{{ID: "vm1"}}, Hypervisor: hypervisortest.New(clock.NewMock()),
		Guests: guesttest.NewDeployer(nil), Repository: memory.New(), Sessions: smem.New()}
	for _, d := range []time.Duration{0, -time.Minute, 30 * time.Second, 481 * time.Minute} {
		cfg := base
		cfg.LogBackupInterval = d
		_, err := walbackup.NewJob(cfg)
		require.ErrorContains(t, err, "log backup interval", "%v", d)
	}
	for _, d := range []time.Duration{time.Minute, walbackup.DefaultLogBackupInterval, walbackup.MaxLogBackupInterval} {
		cfg := base
		cfg.LogBackupInterval = d
		_, err := walbackup.NewJob(cfg)
		require.NoError(t, err, "%v", d)
	}
}

func TestGapWarns(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	h.guest = guesttest.NewGuest(guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: 42, Timeline: 1, WALSegmentSize: 16 << 20})
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1"}}, LogBackupInterval: 15 * time.Minute, Hypervisor: h.hv,
		Guests: guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": h.guest}), Repository: memory.New(),
		Sessions: h.store, Clock: h.clk, Logger: testenv.Logger(t), Observer: func(e walbackup.Event) { h.events <- e },
	})
	require.NoError(t, err)
	h.job = job
	require.NoError(t, job.Enable(ctx))
	h.idle(t)
	h.guest.AddWAL("000000010000000000000001", []byte("1"))
	h.guest.AddWAL("000000010000000000000002", []byte("2"))
	for _, e := range h.step(t, 15*time.Minute) {
		require.NotContains(t, e.Message, "gap", "no gap yet")
	}
	h.guest.AddWAL("000000010000000000000005", []byte("5")) // 3 and 4 never arrived
	var warning string
	for _, e := range h.step(t, 15*time.Minute) {
		if e.Kind == walbackup.EventWarning && strings.Contains(e.Message, "gap") {
			warning = e.Message
		}
	}
	assert.Contains(t, warning, "gap in timeline 1")
	assert.Contains(t, warning, "000000010000000000000003")
	require.NoError(t, job.Disable(ctx))
	assert.Equal(t, session.StateWarning, h.sessions(t, job.ChildName())[0].State)

	// The next session continues from what the repository holds.
	h.guest.AddWAL("000000010000000000000006", []byte("6"))
	require.NoError(t, job.Enable(ctx))
	h.idle(t)
	for _, e := range h.step(t, 15*time.Minute) {
		require.NotContains(t, e.Message, "gap", "6 follows 5")
	}
	require.NoError(t, job.Disable(ctx))
}

// The repository is unreachable for hours: nothing leaves the guest, each
// interval warns, the estimate of when the folder fills up appears, and
// everything ships once the repository is back.
func TestRepositoryDownWarnsUntilFull(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.repo.SetFault(func(op memory.Op, _ string) error {
		if op == memory.OpPut {
			return errors.New("connection refused")
		}
		return nil
	})
	h.guest.SetFree(100_000)
	var last string
	for i := 0; i < 8; i++ { // two hours
		name := fmt.Sprintf("00000001%016X", i+1)
		h.guest.AddWAL(name, walSegment(name, bytes.Repeat([]byte{byte(i)}, 10_000-64))) // 10,000 bytes in all
		for _, e := range h.step(t, 15*time.Minute) {
			require.NotEqual(t, walbackup.EventBatchShipped, e.Kind)
			if e.Kind == walbackup.EventWarning {
				last = e.Message
			}
		}
	}
	assert.Len(t, h.guest.Waiting(), 8, "nothing is deleted in the guest")
	// 10 kB per 15 minutes against 100 kB free: about 2h30m.
	assert.Contains(t, last, "full in about 2h30m0s")

	h.repo.SetFault(nil)
	evs := h.step(t, 15*time.Minute)
	require.NotEmpty(t, evs)
	assert.Equal(t, walbackup.EventBatchShipped, evs[0].Kind)
	assert.Equal(t, 8, evs[0].Files, "everything ships when it is back")
	assert.Empty(t, h.guest.Waiting())
	require.NoError(t, h.job.Disable(ctx))
	assert.Equal(t, session.StateWarning, h.sessions(t, h.job.ChildName())[0].State)
}

// walSegment is the content of a 16 MiB WAL segment name that reads as
// WAL (guesttest.Segment), carrying payload.
func walSegment(name string, payload []byte) []byte {
	f, err := wal.ParseFileName(name)
	if err != nil {
		panic(err)
	}
	return guesttest.Segment(f, 16<<20, 42, 150000, payload)
}

// A shipping configuration that cannot work is refused when the job is
// made, saying what to change.
func TestShippingModeRefused(t *testing.T) {
	key, err := bundle.NewKey(make([]byte, bundle.KeySize))
	require.NoError(t, err)
	base := walbackup.Config{Name: "j", Machines: []walbackup.Machine{{ID: "vm1"}}, Hypervisor: hypervisortest.New(clock.NewMock()),
		Guests: guesttest.NewDeployer(nil), Repository: memory.New(), Sessions: smem.New(), LogBackupInterval: walbackup.DefaultLogBackupInterval}
	server := guest.ShippingServer{Addr: "10.0.0.9:22", User: "shipper", KeyFile: "/etc/pglogship/shipper_key",
		KnownHosts: "10.0.0.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
	for _, c := range []struct {
		tweak func(*walbackup.Config)
		want  string
	}{
		{func(c *walbackup.Config) { c.Shipping.Mode = "sideways" }, `shipping mode "sideways": must be "auto", "direct" or "host"`},
		{func(c *walbackup.Config) { c.Shipping.Compression = "lz4" }, `shipping compression "lz4": must be "zstd" or "s2"`},
		{func(c *walbackup.Config) { c.Shipping.Compression = guest.CodecNone }, `shipping compression "none": must be "zstd" or "s2"`},
		{func(c *walbackup.Config) { c.Shipping.AuthorizationTTL = 2 * time.Hour }, "at most an hour"},
		{func(c *walbackup.Config) { c.Shipping.DirectBundleBytes = -1 }, "direct bundle size cannot be negative"},
		{func(c *walbackup.Config) { c.Shipping.HostBundleBytes = -1 }, "host bundle size cannot be negative"},
		{func(c *walbackup.Config) { c.Shipping.Mode, c.Key = walbackup.ShipDirect, key }, "with a key the WAL must go through it"},
		{func(c *walbackup.Config) { c.Shipping.Mode = walbackup.ShipDirect }, "machine vm1 has no RepositoryPath"},
		{func(c *walbackup.Config) {
			c.Shipping.Mode, c.Shipping.Server = walbackup.ShipDirect, &server
			c.Machines = []walbackup.Machine{{ID: "vm1", RepositoryPath: "/mnt/repository"}}
		}, "a log shipping server (ssh://shipper@10.0.0.9:22) is never used"},
		{func(c *walbackup.Config) { c.Shipping.Server, c.Key = &server, key }, "log shipping server ssh://shipper@10.0.0.9:22: bundles are sealed"},
		{func(c *walbackup.Config) {
			c.Shipping.Server = &guest.ShippingServer{Addr: "10.0.0.9", User: "shipper", KeyFile: "/k", KnownHosts: "x"}
		},
			`address "10.0.0.9" must be host:port`},
		{func(c *walbackup.Config) {
			s := server
			s.KeyFile = "key"
			c.Shipping.Server = &s
		}, `key file "key" must be an absolute path in the guest`},
		{func(c *walbackup.Config) {
			s := server
			s.KnownHosts = " "
			c.Shipping.Server = &s
		}, "known_hosts line is required (host keys are always verified)"},
	} {
		cfg := base
		c.tweak(&cfg)
		_, err := walbackup.NewJob(cfg)
		require.ErrorContains(t, err, c.want)
	}
	for _, tweak := range []func(*walbackup.Config){
		func(c *walbackup.Config) {},
		func(c *walbackup.Config) { c.Key = key }, // auto: through the host
		func(c *walbackup.Config) { c.Shipping.Mode, c.Shipping.Server = walbackup.ShipHost, &server },
		func(c *walbackup.Config) {
			c.Shipping.Mode = walbackup.ShipDirect
			c.Machines = []walbackup.Machine{{ID: "vm1", RepositoryPath: "/mnt/repository"}}
		},
	} {
		cfg := base
		tweak(&cfg)
		_, err := walbackup.NewJob(cfg)
		require.NoError(t, err)
	}
}

// Shipping.HostBundleBytes reaches the ships: a backlog goes in bundles of
// at most that much WAL (here one file each; the default would take all).
func TestChildShipsInBundlesOfHostBundleBytes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Shipping.HostBundleBytes = 1 })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	for i := 0; i < 5; i++ {
		h.addWAL()
	}
	evs := h.step(t, 15*time.Minute)
	require.NotEmpty(t, evs)
	assert.Equal(t, walbackup.EventBatchShipped, evs[0].Kind)
	assert.Equal(t, 5, evs[0].Files)
	assert.Empty(t, h.guest.Waiting())
	bundles := 0
	require.NoError(t, h.repo.List(ctx, "", func(o repository.Object) error {
		if strings.HasSuffix(o.Name, ".bundle") {
			bundles++
		}
		return nil
	}))
	assert.Equal(t, 5, bundles)
	require.NoError(t, h.job.Disable(ctx))
}

// A ship that stops after some bundles were verified counts them, and the
// retry goes on from there without taking them for a gap.
func TestPartialShipLeavesNoFalseGap(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Shipping.HostBundleBytes = 1 })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	h.addWAL()
	h.step(t, 15*time.Minute)
	require.Empty(t, h.guest.Waiting())

	var mu sync.Mutex
	puts := 0
	h.repo.SetFault(func(op memory.Op, name string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == memory.OpPut && strings.Contains(name, "/wal/00000001/") {
			if puts++; puts == 2 {
				return errors.New("repository unreachable")
			}
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		h.addWAL()
	}
	var failed, partial bool
	for _, e := range h.step(t, time.Hour) {
		require.NotContains(t, e.Message, "gap")
		if e.Kind == walbackup.EventWarning && strings.Contains(e.Message, "repository unreachable") {
			failed = true
		}
		if e.Kind == walbackup.EventBatchShipped && e.Files == 1 && !failed {
			partial = true
		}
	}
	assert.True(t, failed, "the second bundle failed")
	assert.True(t, partial, "the first bundle counted before the failure")
	assert.Empty(t, h.guest.Waiting(), "the retry shipped the rest")
	require.NoError(t, h.job.Disable(ctx))
}
