//go:build unix

package walbackup_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// storeCounts counts what Runners and jobs ask of their session stores.
type storeCounts struct {
	sessions, enabled, acquire, renew, release, roster atomic.Int64
}

func (c *storeCounts) total() int64 {
	return c.sessions.Load() + c.enabled.Load() + c.acquire.Load() + c.renew.Load() + c.release.Load() + c.roster.Load()
}

// countingStore is a process's session store, counting its calls; its
// fenced views count into the same counters.
type countingStore struct {
	session.Store
	leaser session.Leaser
	fencer session.Fencer
	n      *storeCounts
}

func newCountingStore(st session.Store, n *storeCounts) countingStore {
	return countingStore{Store: st, leaser: st.(session.Leaser), fencer: st.(session.Fencer), n: n}
}

func (s countingStore) Create(ctx context.Context, x session.Session) (session.Session, error) {
	s.n.sessions.Add(1)
	return s.Store.Create(ctx, x)
}

func (s countingStore) Update(ctx context.Context, x session.Session) error {
	s.n.sessions.Add(1)
	return s.Store.Update(ctx, x)
}

func (s countingStore) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	s.n.sessions.Add(1)
	return s.Store.Append(ctx, id, e)
}

func (s countingStore) Get(ctx context.Context, id string) (session.Session, error) {
	s.n.sessions.Add(1)
	return s.Store.Get(ctx, id)
}

func (s countingStore) List(ctx context.Context, q session.Query) (session.Page, error) {
	s.n.sessions.Add(1)
	return s.Store.List(ctx, q)
}

func (s countingStore) Fenced(l session.Lease) session.Store {
	return countingStore{Store: s.fencer.Fenced(l), leaser: s.leaser, fencer: s.fencer, n: s.n}
}

func (s countingStore) AcquireLease(ctx context.Context, job, holder string, now time.Time, ttl time.Duration) (session.Lease, bool, error) {
	s.n.acquire.Add(1)
	return s.leaser.AcquireLease(ctx, job, holder, now, ttl)
}

func (s countingStore) RenewLease(ctx context.Context, l session.Lease, now time.Time, ttl time.Duration) (session.Lease, error) {
	s.n.renew.Add(1)
	return s.leaser.RenewLease(ctx, l, now, ttl)
}

func (s countingStore) ReleaseLease(ctx context.Context, l session.Lease) error {
	s.n.release.Add(1)
	return s.leaser.ReleaseLease(ctx, l)
}

func (s countingStore) SetJobEnabled(ctx context.Context, job string, enabled bool) error {
	return s.leaser.SetJobEnabled(ctx, job, enabled)
}

func (s countingStore) JobEnabled(ctx context.Context, job string) (bool, error) {
	s.n.enabled.Add(1)
	return s.leaser.JobEnabled(ctx, job)
}

// countingBatchStore is countingStore with the store's LeaseBatcher (a
// call counts once, however many jobs it answers for) and Roster, so the
// processes keep to even shares.
type countingBatchStore struct{ countingStore }

func (s countingBatchStore) Announce(ctx context.Context, holder string, until time.Time) error {
	s.n.roster.Add(1)
	return s.leaser.(session.Roster).Announce(ctx, holder, until)
}

func (s countingBatchStore) Present(ctx context.Context, now time.Time) ([]string, error) {
	s.n.roster.Add(1)
	return s.leaser.(session.Roster).Present(ctx, now)
}

func (s countingBatchStore) Withdraw(ctx context.Context, holder string) error {
	s.n.roster.Add(1)
	return s.leaser.(session.Roster).Withdraw(ctx, holder)
}

func (s countingBatchStore) JobStates(ctx context.Context, jobs []string) ([]session.JobState, error) {
	s.n.enabled.Add(1)
	return s.leaser.(session.LeaseBatcher).JobStates(ctx, jobs)
}

func (s countingBatchStore) RenewLeases(ctx context.Context, ls []session.Lease, now time.Time, ttl time.Duration) ([]session.Lease, []bool, error) {
	s.n.renew.Add(1)
	return s.leaser.(session.LeaseBatcher).RenewLeases(ctx, ls, now, ttl)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkFleetScale shares PGLOGSHIP_SCALE_MACHINES one-machine jobs
// (default 1000) among 1 and PGLOGSHIP_SCALE_PROCESSES Runners (default
// 3), each with a pool of its own on one real PostgreSQL session store, as
// separate processes would have: fake guests, a repository on disk, the
// mock clock stepped through 15-minute intervals, the default lease time
// to live (polls every 10 s). Each op is one interval in which every
// machine archives one segment. It reports, per second of the interval,
// the session store calls of every process together, split into lease
// calls (enabled flags, acquire, renew) and session records, with the
// Runners polling a job at a time (a store with session.Leaser only) or in
// batches and keeping to even shares (session.LeaseBatcher and Roster); PUTs per
// instance per interval; CPU time and heap per machine; how the jobs
// spread; and the wall time of one poll round (every Runner's poll, with
// nothing to ship), which must stay well under the poll interval (10 s),
// and of the whole interval. A sizing figure (docs/scale.md), not a timed
// assertion:
//
//	go test -run '^$' -bench FleetScale -benchtime 1x -timeout 60m ./walbackup/
//
// Past a few thousand jobs per process the mock clock (benbjohnson/clock)
// can fire one timer twice when timers are made while it is stepped, and
// then blocks for good: this harness measures up to that size.
func BenchmarkFleetScale(b *testing.B) {
	testenv.SkipIfShort(b)
	machines := envInt("PGLOGSHIP_SCALE_MACHINES", 1000)
	procs := envInt("PGLOGSHIP_SCALE_PROCESSES", 3)
	counts := []int{1, procs}
	if procs == 1 {
		counts = counts[:1]
	}
	for _, n := range counts {
		for _, batch := range []bool{false, true} {
			b.Run(fmt.Sprintf("machines=%d/processes=%d/batch=%t", machines, n, batch), func(b *testing.B) {
				if !batch && machines > 2000 {
					b.Skip("a job at a time: a poll round of this many jobs outlasts the poll interval")
				}
				benchFleetScale(b, machines, n, batch)
			})
		}
	}
}

func benchFleetScale(b *testing.B, machines, procs int, batch bool) {
	ctx := context.Background()
	pg := testenv.StartPostgres(b, testenv.PostgresConfig{Settings: map[string]string{"max_connections": "200"}})
	f := newFleetOf(discardLogger(), max(1<<16, 64*machines*procs))
	disk, err := fs.New(fs.Config{Root: b.TempDir()})
	require.NoError(b, err)
	repo := &countingRepo{Repository: disk, puts: map[string]int{}}
	guests := make([]*guesttest.Guest, machines)
	names := make([]string, machines)
	for i := range guests {
		guests[i] = newFakeGuest(uint64(i + 1))
		names[i] = fmt.Sprintf("Job %05d", i)
	}
	var counts storeCounts
	type proc struct {
		holder string
		runner *walbackup.Runner
		stop   func()
	}
	var ps []proc
	for p := 0; p < procs; p++ {
		holder := fmt.Sprintf("host-%d", p+1)
		st, err := postgres.Open(ctx, postgres.Config{ConnString: pg.ConnString("postgres"), MaxConns: 16})
		require.NoError(b, err)
		b.Cleanup(st.Close)
		var cs session.Store = newCountingStore(st, &counts)
		if batch {
			cs = countingBatchStore{cs.(countingStore)}
		}
		jobs := make([]*walbackup.Job, machines)
		for i := range jobs {
			jobs[i] = f.newJob(b, holder, names[i], map[string]*guesttest.Guest{"vm1": guests[i]}, nil, repo, cs)
		}
		r, err := walbackup.NewRunner(walbackup.RunnerConfig{Jobs: jobs, Holder: holder, Sessions: cs, Clock: f.clk,
			Logger: discardLogger(), Observer: f.runnerObserver(holder)})
		require.NoError(b, err)
		ps = append(ps, proc{holder: holder, runner: r, stop: f.startRunner(b, holder, r)})
		if p == 0 {
			for _, n := range names[1:] {
				require.NoError(b, st.SetJobEnabled(ctx, n, true))
			}
			f.set(b, holder, r, names[0], true)
		}
	}
	f.step(b, 15*time.Minute) // all started and an interval with nothing to ship
	running := 0
	var spread []int
	for _, p := range ps {
		spread = append(spread, len(p.runner.Running()))
		running += len(p.runner.Running())
	}
	require.Equal(b, machines, running, "every job runs once")

	// One poll round with nothing due but polls.
	pollStart := time.Now()
	f.step(b, walbackup.DefaultLeaseTTL/3)
	pollWall := time.Since(pollStart)

	data := make([]byte, 4<<10)
	seq := 0
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime(syscall.RUSAGE_SELF)
	calls0 := counts.total()
	lease0 := counts.enabled.Load() + counts.acquire.Load() + counts.renew.Load()
	repo.reset()
	wall0 := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, g := range guests {
			seq++
			copy(data, fmt.Sprintf("%016d", seq))
			g.SwitchWAL(data)
		}
		f.step(b, 15*time.Minute)
	}
	b.StopTimer()
	wall := time.Since(wall0)
	cpu := cpuTime(syscall.RUSAGE_SELF) - cpu0
	for i, g := range guests {
		require.Empty(b, g.Waiting(), "machine %d: WAL left in the guest", i)
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	puts, _, _ := repo.counts()
	secs := float64(b.N) * (15 * time.Minute).Seconds()
	n := float64(machines * b.N)
	b.ReportMetric(float64(counts.total()-calls0)/secs, "store-calls/s")
	b.ReportMetric(float64(counts.enabled.Load()+counts.acquire.Load()+counts.renew.Load()-lease0)/secs, "lease-calls/s")
	b.ReportMetric(float64(puts)/n, "puts/instance-interval")
	b.ReportMetric(float64(cpu.Microseconds())/1000/n, "cpu-ms/machine-interval")
	b.ReportMetric(float64(m1.HeapInuse)/1024/float64(machines), "heap-KiB/machine")
	b.ReportMetric(pollWall.Seconds(), "poll-round-wall-s")
	b.ReportMetric(wall.Seconds()/float64(b.N), "interval-wall-s")
	b.Logf("%d machines over %d processes: jobs per process %v; one poll round took %v of wall time, an interval %v",
		machines, procs, spread, pollWall.Round(time.Millisecond), (wall / time.Duration(b.N)).Round(time.Millisecond))
	for _, p := range ps {
		p.stop()
	}
}
