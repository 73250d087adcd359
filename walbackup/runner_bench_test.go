//go:build unix

package walbackup_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// Shape of BenchmarkRunnerScale: machines, and the WAL each archives per
// interval.
const (
	benchMachines    = 200
	benchSegments    = 4        // segments per machine per interval
	benchSegmentSize = 64 << 10 // bytes of each (the fake guest's segments need not be 16 MiB)
)

// BenchmarkRunnerScale runs 200 one-machine jobs in one Runner (one
// process) with the lease machinery on: fake hypervisor and guests, a real
// repository on disk (repository/fs in a temporary directory, fsync and
// all) and the memory or a real PostgreSQL session store, the mock clock
// stepped through 15-minute intervals (and the Runner's polls every
// LeaseTTL/3 in between). Each op is one interval in which every machine
// archives benchSegments segments of random bytes, which every job ships.
//
// It reports per machine and interval the process's CPU time (user and
// system, rusage), heap allocations and repository PUTs per instance (the
// goal: one bundle per interval, not one object per segment), and the heap
// in use per machine at the end, less the fake guests' copies of the WAL.
// A sizing figure, not a timed assertion. Run it with a fixed count:
//
//	go test -run '^$' -bench RunnerScale -benchtime 4x ./walbackup/
func BenchmarkRunnerScale(b *testing.B) {
	b.Run("store=memory", func(b *testing.B) { benchRunnerScale(b, smem.New()) })
	b.Run("store=postgres", func(b *testing.B) {
		testenv.SkipIfShort(b)
		pg := testenv.StartPostgres(b, testenv.PostgresConfig{})
		st, err := postgres.Open(context.Background(), postgres.Config{ConnString: pg.ConnString("postgres")})
		require.NoError(b, err)
		b.Cleanup(st.Close)
		benchRunnerScale(b, st)
	})
}

func benchRunnerScale(b *testing.B, store session.Store) {
	f := newFleet(discardLogger())
	disk, err := fs.New(fs.Config{Root: b.TempDir()})
	require.NoError(b, err)
	repo := &countingRepo{Repository: disk, puts: map[string]int{}}
	guests := make([]*guesttest.Guest, benchMachines)
	var jobs []*walbackup.Job
	for i := range guests {
		guests[i] = newFakeGuest(uint64(i + 1))
		jobs = append(jobs, f.newJob(b, "bench", fmt.Sprintf("Job %03d", i), map[string]*guesttest.Guest{"vm1": guests[i]}, nil, repo, store))
	}
	r, err := walbackup.NewRunner(walbackup.RunnerConfig{Jobs: jobs, Holder: "bench", Sessions: store, Clock: f.clk,
		Logger: discardLogger(), Observer: f.runnerObserver("bench")})
	require.NoError(b, err)
	stop := f.startRunner(b, "bench", r)
	for _, j := range jobs[1:] {
		require.NoError(b, store.(session.Leaser).SetJobEnabled(context.Background(), j.Name(), true))
	}
	f.set(b, "bench", r, jobs[0].Name(), true) // its poll starts all 200
	require.Len(b, r.Running(), benchMachines)
	f.step(b, 15*time.Minute) // an interval with nothing to ship

	data := make([]byte, benchSegmentSize)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	seq := 0
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime(syscall.RUSAGE_SELF)
	repo.reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, g := range guests {
			for s := 0; s < benchSegments; s++ {
				seq++
				copy(data, fmt.Sprintf("%016d", seq))
				g.SwitchWAL(data)
			}
		}
		f.step(b, 15*time.Minute)
	}
	b.StopTimer()
	cpu := cpuTime(syscall.RUSAGE_SELF) - cpu0
	runtime.ReadMemStats(&m1)
	for i, g := range guests {
		require.Empty(b, g.Waiting(), "machine %d: WAL left in the guest", i)
	}
	runtime.GC()
	var m2 runtime.MemStats
	runtime.ReadMemStats(&m2)
	puts, bundles, perInstance := repo.counts()
	stop()

	n := float64(benchMachines * b.N)
	fakeWAL := float64(seq * benchSegmentSize) // every segment the fake guests keep in Archived
	b.ReportMetric(float64(cpu.Microseconds())/1000/n, "cpu-ms/machine-interval")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/n, "allocs/machine-interval")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/1024/n, "alloc-KiB/machine-interval")
	b.ReportMetric((float64(m2.HeapInuse)-fakeWAL)/1024/benchMachines, "heap-KiB/machine")
	b.ReportMetric(float64(puts)/n, "puts/instance-interval")
	b.ReportMetric(float64(bundles)/n, "bundles/instance-interval")
	b.ReportMetric(float64(benchSegments), "segments/instance-interval")
	require.Len(b, perInstance, benchMachines, "every machine wrote")
	for inst, c := range perInstance {
		require.Equal(b, b.N, c, "%s: PUTs in %d intervals", inst, b.N)
	}
}

// countingRepo counts PUTs, by instance (the prefix before "/wal/" or
// "/restorepoints/").
type countingRepo struct {
	repository.Repository
	mu      sync.Mutex
	puts    map[string]int
	total   int
	bundles int
}

func (r *countingRepo) Put(ctx context.Context, name string, rd io.Reader) error {
	r.mu.Lock()
	inst, _, _ := strings.Cut(name, "/wal/")
	inst, _, _ = strings.Cut(inst, "/restorepoints/")
	r.puts[inst]++
	r.total++
	if strings.HasSuffix(name, ".bundle") {
		r.bundles++
	}
	r.mu.Unlock()
	return r.Repository.Put(ctx, name, rd)
}

func (r *countingRepo) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.puts, r.total, r.bundles = map[string]int{}, 0, 0
}

func (r *countingRepo) counts() (total, bundles int, perInstance map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	perInstance = map[string]int{}
	for k, v := range r.puts {
		perInstance[k] = v
	}
	return r.total, r.bundles, perInstance
}
