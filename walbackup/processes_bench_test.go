package walbackup_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// BenchmarkFleetProcesses is the fleet at the size the scale figures are
// for: PGLOGSHIP_FLEET_MACHINES one-machine jobs (default 10,000) on dir
// guests, shared by PGLOGSHIP_FLEET_PROCESSES fleethost processes
// (default 5, separate OS processes with the real clock) on one real
// PostgreSQL session store and one MinIO, at a PGLOGSHIP_FLEET_INTERVAL
// interval (default 15m) and the default lease time to live. Once every
// job has started its child session, each guest archives one more segment
// and one whole interval is measured: session store transactions per
// second (pg_stat_database), lease rows renewed per second, bundles (PUTs)
// per instance, CPU and resident memory of the processes per machine, the
// lag of each batch after its interval was due, and how the jobs spread.
// A sizing run of about 20 minutes with the defaults, not a timed
// assertion (make scale):
//
//	go test -run '^$' -bench FleetProcesses -benchtime 1x -timeout 60m ./walbackup/
func BenchmarkFleetProcesses(b *testing.B) {
	testenv.SkipIfShort(b)
	ctx := context.Background()
	machines := envInt("PGLOGSHIP_FLEET_MACHINES", 10000)
	procs := envInt("PGLOGSHIP_FLEET_PROCESSES", 5)
	interval := 15 * time.Minute
	if v := os.Getenv("PGLOGSHIP_FLEET_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(b, err)
		interval = d
	}
	env := newFleetEnv(b, testenv.PostgresConfig{Settings: map[string]string{"max_connections": "200"}})
	tmp, storePG, records, repo := env.dir, env.storePG, env.records, env.repo

	type dirGuest struct {
		dir  string
		inst guest.Instance
		next wal.FileName
	}
	guests := make([]*dirGuest, machines)
	var jobs []map[string]string
	for i := range guests {
		name := fmt.Sprintf("fleet-%05d", i)
		g := &dirGuest{dir: filepath.Join(tmp, "guests", name),
			inst: guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: uint64(100000 + i), Timeline: 1,
				WALSegmentSize: 16 << 20},
			next: wal.FileName{Kind: wal.Segment, Timeline: 1, Log: 0, Seg: 1}}
		require.NoError(b, guesttest.NewDirGuest(g.dir, g.inst))
		guests[i] = g
		jobs = append(jobs, map[string]string{"name": name, "dir_guest": g.dir, "wal_dir": "/unused"})
		require.NoError(b, records.SetJobEnabled(ctx, name, true))
	}
	archive := func() {
		for _, g := range guests {
			data := guesttest.Segment(g.next, g.inst.WALSegmentSize, g.inst.SystemID, g.inst.Version, []byte(g.next.String()))
			require.NoError(b, guesttest.PutDirWAL(g.dir, g.next.String(), data))
			g.next = g.next.Next(g.inst.WALSegmentSize)
		}
	}
	archive()

	log := &fleetLog{}
	var ps []*hostProc
	for p := 0; p < procs; p++ {
		holder := fmt.Sprintf("host-%d", p+1)
		ps = append(ps, env.start(b, log, holder, env.config(holder, walbackup.DefaultLeaseTTL, interval, jobs)))
	}
	since := func(kind walbackup.EventKind, t time.Time) map[string]bool {
		out := map[string]bool{}
		for _, x := range log.find(func(x fleetLine) bool { return x.Kind == string(kind) && !x.Time.Before(t) }) {
			out[x.Job] = true
		}
		return out
	}
	started := time.Now()
	waitUntil(b, 10*time.Minute, "every job started its child session", func() bool {
		return len(since(walbackup.EventSessionStarted, started)) == machines
	})
	b.Logf("%d jobs started their child sessions in %v", machines, time.Since(started).Round(time.Second))

	// One whole interval, from now on: every job's first tick falls in
	// it, and ships the segments waiting.
	archive()
	t0 := time.Now()
	tx0, lease0 := storeStats(b, storePG)
	cpu0 := make([]time.Duration, len(ps))
	for i, p := range ps {
		cpu0[i], _ = procUsage(b, p.cmd.Process.Pid)
	}
	puts0 := countObjects(b, repo)
	b.ResetTimer()
	waitUntil(b, interval+10*time.Minute, "every job shipped the interval's batch", func() bool {
		return len(since(walbackup.EventBatchShipped, t0)) == machines
	})
	time.Sleep(time.Until(t0.Add(interval))) // the whole interval, its polls and renewals too
	b.StopTimer()
	secs := time.Since(t0).Seconds()
	tx1, lease1 := storeStats(b, storePG)
	var cpu time.Duration
	var rss int64
	for i, p := range ps {
		c, r := procUsage(b, p.cmd.Process.Pid)
		cpu += c - cpu0[i]
		rss += r
	}
	puts := countObjects(b, repo) - puts0
	var lags []time.Duration
	for _, x := range log.find(func(x fleetLine) bool { return x.Kind == string(walbackup.EventBatchShipped) && !x.Time.Before(t0) }) {
		lags = append(lags, time.Duration(x.LagMS)*time.Millisecond)
	}
	slices.Sort(lags)
	spread := map[string]int{}
	for _, h := range log.holders() {
		spread[h]++
	}
	n := float64(machines)
	b.ReportMetric(float64(tx1-tx0)/secs, "store-tx/s")
	b.ReportMetric(float64(lease1-lease0)/secs, "lease-rows-renewed/s")
	b.ReportMetric(float64(puts)/n, "puts/instance-interval")
	b.ReportMetric(float64(cpu.Microseconds())/1000/n, "cpu-ms/machine-interval")
	b.ReportMetric(float64(rss)/1024/n, "rss-KiB/machine")
	b.ReportMetric(lags[len(lags)/2].Seconds(), "lag-p50-s")
	b.ReportMetric(lags[len(lags)*99/100].Seconds(), "lag-p99-s")
	b.Logf("%d machines over %d processes, %v interval: jobs per process %v; lag p50 %v, p99 %v, max %v",
		machines, procs, interval, spread, lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1])
	for _, p := range ps {
		require.NoError(b, p.cmd.Process.Signal(os.Interrupt))
	}
	for _, p := range ps {
		<-p.exited
	}
}

// storeStats reads the session store's committed transactions and the
// lease rows updated so far.
func storeStats(tb testing.TB, pg *testenv.Postgres) (tx, leaseRows int64) {
	tb.Helper()
	out := pg.Psql(tb, "config", `SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'config') || ' ' ||
		(SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'leases')`)
	f := strings.Fields(out)
	require.Len(tb, f, 2, out)
	tx, err := strconv.ParseInt(f[0], 10, 64)
	require.NoError(tb, err)
	leaseRows, err = strconv.ParseInt(f[1], 10, 64)
	require.NoError(tb, err)
	return tx, leaseRows
}

// procUsage reads a process's CPU time (user and system) and resident
// memory from /proc.
func procUsage(tb testing.TB, pid int) (time.Duration, int64) {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(tb, err)
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	rssPages, _ := strconv.ParseInt(f[21], 10, 64)
	const tick = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / tick, rssPages * int64(os.Getpagesize())
}

// countObjects counts the repository's objects.
func countObjects(tb testing.TB, repo repository.Repository) int {
	tb.Helper()
	n := 0
	require.NoError(tb, repo.List(context.Background(), "", func(repository.Object) error { n++; return nil }))
	return n
}
