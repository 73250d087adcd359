package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/metrics"
	"github.com/pglogship/pglogship/repository/memory"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// world is a job on a fake guest whose observer feeds a Collector, on a
// mock clock stepped from one wake-up of the job to the next.
type world struct {
	clk    *clock.Mock
	job    *walbackup.Job
	guest  *guesttest.Guest
	reg    *prometheus.Registry
	runner func(walbackup.RunnerEvent)
	events chan walbackup.Event
	next   time.Time
	seq    int
}

func newWorld(t *testing.T, holder ...string) *world {
	w := &world{clk: clock.NewMock(), events: make(chan walbackup.Event, 1024), reg: prometheus.NewRegistry()}
	w.clk.Set(time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC))
	c := metrics.New(w.clk)
	w.reg.MustRegister(c)
	w.runner = c.Runner(append(holder, "host")[0])
	w.guest = guesttest.NewGuest(guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: 42, Timeline: 1,
		WALSegmentSize: 16 << 20})
	w.guest.SetFree(1 << 30)
	observe := c.Job("Daily DB Job")
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1"}}, LogBackupInterval: 15 * time.Minute,
		Hypervisor: hypervisortest.New(w.clk, hypervisor.Machine{ID: "vm1"}),
		Guests:     guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": w.guest}),
		Repository: memory.New(), Sessions: smem.New(), Clock: w.clk,
		Logger: slogDiscard(), RetryDelay: time.Hour,
		Observer: func(e walbackup.Event) { observe(e); w.events <- e },
	})
	require.NoError(t, err)
	w.job = job
	return w
}

func (w *world) idle(t *testing.T) {
	t.Helper()
	for {
		select {
		case e := <-w.events:
			if e.Kind == walbackup.EventIdle {
				w.next = e.Next
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the job never became idle")
		}
	}
}

func (w *world) step(t *testing.T, d time.Duration) {
	t.Helper()
	target := w.clk.Now().Add(d)
	for !w.next.IsZero() && !w.next.After(target) {
		w.clk.Set(w.next)
		w.idle(t)
	}
	w.clk.Set(target)
}

func (w *world) addWAL(n int) {
	for i := 0; i < n; i++ {
		w.seq++
		w.guest.SwitchWAL([]byte(fmt.Sprintf("segment %d", w.seq)))
	}
}

// scrape reads the metrics as Prometheus would, over HTTP on loopback.
func (w *world) scrape(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// value is the sample of name whose labels include every one of labels
// ("k=v"), from a scrape; NaN when there is none.
func value(t *testing.T, text, name string, labels ...string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			ok = ok && strings.Contains(line, fmt.Sprintf("%s=%q", k, v))
		}
		if !ok {
			continue
		}
		var f float64
		_, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &f)
		if err != nil && strings.HasSuffix(line, "+Inf") {
			return math.Inf(1)
		}
		require.NoError(t, err, line)
		return f
	}
	return math.NaN()
}

// The metrics of a job, from its observer, scraped over HTTP: WAL shipped
// and its RPO, sessions, failures by kind, the restore point's age, the
// guest folder's fill and when it would be full, and a drill's result.
func TestJobMetrics(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	require.NoError(t, w.job.Enable(ctx))
	w.idle(t)
	w.addWAL(3)
	w.step(t, 15*time.Minute)
	w.step(t, 5*time.Minute)
	text := w.scrape(t)
	inst := []string{"backup_job=Daily DB Job", "machine=vm1", `data_dir=`}
	assert.Equal(t, 3.0, value(t, text, "pglogship_wal_shipped_files_total", inst...))
	assert.Equal(t, float64(len("segment 1")+len("segment 2")+len("segment 3")), value(t, text, "pglogship_wal_shipped_bytes_total", inst...))
	assert.Equal(t, 1.0, value(t, text, "pglogship_wal_batches_total", append(inst, "path=host")...))
	assert.Equal(t, 300.0, value(t, text, "pglogship_rpo_seconds", inst...), "five minutes since the newest WAL was stored")
	assert.Equal(t, 1.0, value(t, text, "pglogship_sessions_running", "kind=child"))
	assert.GreaterOrEqual(t, value(t, text, "pglogship_failures_total", "failure=no_restore_point"), 1.0,
		"WAL shipped before any restore point")
	assert.Equal(t, 0.0, value(t, text, "pglogship_guest_folder_waiting_bytes", inst...))
	assert.Equal(t, float64(1<<30), value(t, text, "pglogship_guest_folder_free_bytes", inst...))
	assert.True(t, math.IsInf(value(t, text, "pglogship_guest_folder_full_in_seconds", inst...), 1), "not growing")

	require.NoError(t, w.job.StartParent(ctx))
	w.idle(t)
	w.step(t, time.Hour)
	text = w.scrape(t)
	assert.Equal(t, 1.0, value(t, text, "pglogship_restore_points_total", inst...))
	age := value(t, text, "pglogship_restore_point_age_seconds", inst...)
	assert.InDelta(t, 3600, age, 1, "the restore point is an hour old")
	assert.Equal(t, 1.0, value(t, text, "pglogship_sessions_total", "kind=parent", "state=success"))
	assert.Equal(t, 1.0, value(t, text, "pglogship_sessions_total", "kind=child", "state=warning"), "the first child session ended for the parent")

	// Shipping fails: the WAL piles up, the failures are counted by kind,
	// the RPO grows, and the folder says when it is full.
	w.guest.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpRead {
			return errors.New("repository unreachable (injected)")
		}
		return nil
	})
	w.addWAL(4)
	w.step(t, 15*time.Minute)
	w.addWAL(4)
	w.step(t, 15*time.Minute)
	text = w.scrape(t)
	assert.GreaterOrEqual(t, value(t, text, "pglogship_failures_total", "failure=ship_failed"), 2.0)
	assert.Equal(t, (30 * time.Minute).Seconds(), value(t, text, "pglogship_rpo_seconds", inst...),
		"two intervals since everything was shipped (the last interval that found no new WAL)")
	waiting := value(t, text, "pglogship_guest_folder_waiting_bytes", inst...)
	assert.Positive(t, waiting)
	fullIn := value(t, text, "pglogship_guest_folder_full_in_seconds", inst...)
	rate := float64(4*len("segment 10")) / (15 * time.Minute).Seconds()
	assert.InDelta(t, float64(1<<30)/rate, fullIn, float64(1<<30)/rate*0.2, "free space over the rate it piles up at")

	w.guest.SetFault(nil)
	w.step(t, 15*time.Minute)
	text = w.scrape(t)
	assert.Equal(t, 0.0, value(t, text, "pglogship_guest_folder_waiting_bytes", inst...), "shipped again")
	assert.Less(t, value(t, text, "pglogship_rpo_seconds", inst...), 1.0)

	// An idle database: no new WAL for an interval is no growing RPO.
	w.step(t, 15*time.Minute)
	w.step(t, time.Minute)
	text = w.scrape(t)
	assert.Equal(t, 60.0, value(t, text, "pglogship_rpo_seconds", inst...), "caught up at the last interval, a minute ago")
}

// When a job's run ends in this process (handed over to another), its
// gauges and ages go: the process that runs it now reports them.
func TestJobForgottenWhenItsRunEnds(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "host-1")
	require.NoError(t, w.job.Enable(ctx))
	w.idle(t)
	w.addWAL(1)
	w.step(t, 15*time.Minute)
	inst := []string{"backup_job=Daily DB Job", "machine=vm1", `data_dir=`}
	text := w.scrape(t)
	require.Equal(t, 0.0, value(t, text, "pglogship_rpo_seconds", inst...))
	require.NoError(t, w.job.Disable(ctx)) // its run here ends, as a hand-over ends it
	w.runner(walbackup.RunnerEvent{Kind: walbackup.RunnerJobEnded, Job: "Daily DB Job"})
	w.clk.Add(time.Hour)
	text = w.scrape(t)
	assert.True(t, math.IsNaN(value(t, text, "pglogship_rpo_seconds", inst...)), "no stale RPO")
	assert.True(t, math.IsNaN(value(t, text, "pglogship_wal_last_shipped_timestamp_seconds", inst...)))
	assert.Equal(t, 1.0, value(t, text, "pglogship_wal_shipped_files_total", inst...), "counters stay")
}

// A Runner's observer: the jobs it runs and what it did with them.
func TestRunnerMetrics(t *testing.T) {
	c := metrics.New(nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	observe := c.Runner("host-1")
	for _, k := range []walbackup.RunnerEventKind{walbackup.RunnerJobStarted, walbackup.RunnerJobStarted, walbackup.RunnerIdle,
		walbackup.RunnerJobHandingOver, walbackup.RunnerJobEnded} {
		observe(walbackup.RunnerEvent{Kind: k, Job: "j"})
	}
	w := &world{reg: reg}
	text := w.scrape(t)
	assert.Equal(t, 1.0, value(t, text, "pglogship_runner_jobs_running", "holder=host-1"))
	assert.Equal(t, 2.0, value(t, text, "pglogship_runner_events_total", "kind=job_started"))
	assert.Equal(t, 1.0, value(t, text, "pglogship_runner_events_total", "kind=job_handing_over"))
	assert.True(t, math.IsNaN(value(t, text, "pglogship_runner_events_total", "kind=runner_idle")), "idle polls are not counted")
}

func slogDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
