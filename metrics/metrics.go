// Package metrics turns what jobs and Runners report to their observers
// (walbackup.Event, walbackup.RunnerEvent) into Prometheus metrics, with
// github.com/prometheus/client_golang. A Collector is a
// prometheus.Collector: register it on the embedding program's own
// registry, and pass its observers to the jobs and the Runner:
//
//	c := metrics.New(clk)
//	reg.MustRegister(c)
//	cfg.Observer = c.Job(cfg.Name)         // walbackup.Config
//	rcfg.Observer = c.Runner(rcfg.Holder)  // walbackup.RunnerConfig
//
// Times are read from the injected clock, so the ages it reports (RPO,
// newest restore point) are those of the jobs' clock. Every metric is
// documented in docs/operations.md, with alert rules for the common
// failures.
package metrics

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

const ns = "pglogship"

// instanceLabels name an instance: the parent job, the machine, and the
// data directory of one of its several instances ("" for its only one).
// Not job and instance: Prometheus gives those to the scrape target.
var instanceLabels = []string{"backup_job", "machine", "data_dir"}

// Collector gathers the metrics of jobs and Runners. Safe for concurrent
// use; its observers never block.
type Collector struct {
	clk clock.Clock

	bytes, files     *prometheus.CounterVec
	batches          *prometheus.CounterVec
	lag              *prometheus.HistogramVec
	lastShipped      *prometheus.GaugeVec
	sessions         *prometheus.CounterVec
	running          *prometheus.GaugeVec
	duration         *prometheus.HistogramVec
	failures         *prometheus.CounterVec
	waiting, free    *prometheus.GaugeVec
	restorePoints    *prometheus.CounterVec
	restorePointTime *prometheus.GaugeVec
	drills           *prometheus.CounterVec
	drillPassed      *prometheus.GaugeVec
	runnerEvents     *prometheus.CounterVec
	runnerJobs       *prometheus.GaugeVec

	rpo, rpAge, fullIn *prometheus.Desc

	mu      sync.Mutex
	shipped map[[3]string]time.Time   // when each instance's newest WAL was stored
	newest  map[[3]string]time.Time   // each instance's newest restore point's time
	folders map[[3]string]folderTrend // each instance's temporary folder, last two looks
}

// folderTrend is how an instance's temporary folder filled between the
// last two looks, for the time until it is full.
type folderTrend struct {
	at      time.Time
	waiting int64
	free    int64
	rate    float64 // bytes per second added between the last two looks; 0 when not growing
}

// New returns a Collector reading times from clk (nil: the real clock).
func New(clk clock.Clock) *Collector {
	if clk == nil {
		clk = clock.New()
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help}, labels)
	}
	withKind := append(append([]string(nil), instanceLabels...), "path")
	return &Collector{
		clk:   clk,
		bytes: counter("wal_shipped_bytes_total", "WAL bytes shipped and verified in the repository (before compression).", instanceLabels...),
		files: counter("wal_shipped_files_total", "WAL files (segments, history and backup files) shipped and verified.", instanceLabels...),
		batches: counter("wal_batches_total", "Batches of WAL shipped, each one bundle (PUT) or none, by path (direct or host).",
			withKind...),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "wal_batch_lag_seconds",
			Help:    "How long after its interval was due each batch was stored.",
			Buckets: []float64{1, 5, 15, 60, 300, 900, 3600}}, []string{"backup_job"}),
		lastShipped: gauge("wal_last_shipped_timestamp_seconds", "When the instance's newest WAL was stored (Unix time).", instanceLabels...),
		sessions:    counter("sessions_total", "Sessions ended, by kind (parent, child) and final state.", "backup_job", "kind", "state"),
		running:     gauge("sessions_running", "Sessions under way, by kind.", "backup_job", "kind"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "session_duration_seconds",
			Help:    "How long ended sessions ran, by kind.",
			Buckets: []float64{60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600}}, []string{"backup_job", "kind"}),
		failures:      counter("failures_total", "Warnings and errors, by what they are about (walbackup.Failure).", "backup_job", "failure"),
		waiting:       gauge("guest_folder_waiting_bytes", "WAL bytes waiting in the instance's temporary folder in its guest.", instanceLabels...),
		free:          gauge("guest_folder_free_bytes", "Bytes free on the file system of the instance's temporary folder.", instanceLabels...),
		restorePoints: counter("restore_points_total", "Restore points committed by parent sessions.", instanceLabels...),
		restorePointTime: gauge("restore_point_newest_timestamp_seconds",
			"When the instance's newest restore point is consistent as of (Unix time).", instanceLabels...),
		drills:       counter("drills_total", "Restore drills, by result (passed, failed).", "backup_job", "machine", "result"),
		drillPassed:  gauge("drill_last_passed", "1 when the instance's last restore drill passed, 0 when it failed.", instanceLabels...),
		runnerEvents: counter("runner_events_total", "What Runners did with jobs (walbackup.RunnerEventKind).", "holder", "kind"),
		runnerJobs:   gauge("runner_jobs_running", "Jobs a Runner runs now.", "holder"),
		rpo: prometheus.NewDesc(ns+"_rpo_seconds",
			"How far the instance's newest shipped WAL lies behind now: the data at risk if the machine were lost now.", instanceLabels, nil),
		rpAge: prometheus.NewDesc(ns+"_restore_point_age_seconds", "Age of the instance's newest restore point.", instanceLabels, nil),
		fullIn: prometheus.NewDesc(ns+"_guest_folder_full_in_seconds",
			"When the instance's temporary folder would be full at the rate WAL piled up between the last two looks; +Inf while it does not grow.",
			instanceLabels, nil),
		shipped: map[[3]string]time.Time{},
		newest:  map[[3]string]time.Time{},
		folders: map[[3]string]folderTrend{},
	}
}

func (c *Collector) vecs() []prometheus.Collector {
	return []prometheus.Collector{c.bytes, c.files, c.batches, c.lag, c.lastShipped, c.sessions, c.running, c.duration, c.failures,
		c.waiting, c.free, c.restorePoints, c.restorePointTime, c.drills, c.drillPassed, c.runnerEvents, c.runnerJobs}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.vecs() {
		v.Describe(ch)
	}
	ch <- c.rpo
	ch <- c.rpAge
	ch <- c.fullIn
}

// Collect implements prometheus.Collector: the recorded metrics, and the
// ages as of the clock's now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.vecs() {
		v.Collect(ch)
	}
	now := c.clk.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range c.shipped {
		ch <- prometheus.MustNewConstMetric(c.rpo, prometheus.GaugeValue, max(now.Sub(t).Seconds(), 0), k[:]...)
	}
	for k, t := range c.newest {
		ch <- prometheus.MustNewConstMetric(c.rpAge, prometheus.GaugeValue, max(now.Sub(t).Seconds(), 0), k[:]...)
	}
	for k, f := range c.folders {
		full := math.Inf(1)
		if f.rate > 0 {
			full = float64(f.free) / f.rate
		}
		ch <- prometheus.MustNewConstMetric(c.fullIn, prometheus.GaugeValue, full, k[:]...)
	}
}

// Job returns the observer of the job named job (walbackup.Config.Name):
// its Config.Observer, or called from it.
func (c *Collector) Job(job string) func(walbackup.Event) {
	return func(e walbackup.Event) { c.observe(job, e) }
}

// Runner returns the observer of the Runner of holder
// (walbackup.RunnerConfig.Observer).
func (c *Collector) Runner(holder string) func(walbackup.RunnerEvent) {
	return func(e walbackup.RunnerEvent) {
		if e.Kind == walbackup.RunnerIdle {
			return
		}
		c.runnerEvents.WithLabelValues(holder, string(e.Kind)).Inc()
		switch e.Kind {
		case walbackup.RunnerJobStarted:
			c.runnerJobs.WithLabelValues(holder).Inc()
		case walbackup.RunnerJobEnded:
			c.runnerJobs.WithLabelValues(holder).Dec()
			c.forget(e.Job)
		}
	}
}

// forget drops the gauges and ages of job, whose run in this process has
// ended (handed over, stopped): the process that runs it now reports
// them, and a stale age here would raise false alerts. Counters stay.
func (c *Collector) forget(job string) {
	for _, g := range []*prometheus.GaugeVec{c.lastShipped, c.waiting, c.free, c.restorePointTime, c.drillPassed, c.running} {
		g.DeletePartialMatch(prometheus.Labels{"backup_job": job})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range []map[[3]string]time.Time{c.shipped, c.newest} {
		for k := range m {
			if k[0] == job {
				delete(m, k)
			}
		}
	}
	for k := range c.folders {
		if k[0] == job {
			delete(c.folders, k)
		}
	}
}

func (c *Collector) observe(job string, e walbackup.Event) {
	key := [3]string{job, e.Machine, e.Instance}
	switch e.Kind {
	case walbackup.EventBatchShipped:
		path := "host"
		if e.Direct {
			path = "direct"
		}
		c.bytes.WithLabelValues(key[:]...).Add(float64(e.Bytes))
		c.files.WithLabelValues(key[:]...).Add(float64(e.Files))
		c.batches.WithLabelValues(job, e.Machine, e.Instance, path).Inc()
		c.lag.WithLabelValues(job).Observe(e.Lag.Seconds())
		c.allShipped(key)
	case walbackup.EventCaughtUp:
		c.allShipped(key)
	case walbackup.EventSessionStarted:
		c.running.WithLabelValues(job, kindOf(e.Session)).Inc()
	case walbackup.EventSessionEnded:
		kind := kindOf(e.Session)
		c.running.WithLabelValues(job, kind).Dec()
		c.sessions.WithLabelValues(job, kind, string(e.Session.State)).Inc()
		if !e.Session.End.IsZero() {
			c.duration.WithLabelValues(job, kind).Observe(e.Session.End.Sub(e.Session.Start).Seconds())
		}
	case walbackup.EventWarning:
		f := string(e.Failure)
		if f == "" {
			f = "other"
		}
		c.failures.WithLabelValues(job, f).Inc()
	case walbackup.EventFolder:
		c.waiting.WithLabelValues(key[:]...).Set(float64(e.Waiting))
		c.free.WithLabelValues(key[:]...).Set(float64(e.Free))
		now := c.clk.Now()
		c.mu.Lock()
		prev, seen := c.folders[key]
		next := folderTrend{at: now, waiting: e.Waiting, free: e.Free}
		if dt := now.Sub(prev.at).Seconds(); seen && dt > 0 && e.Waiting > prev.waiting {
			next.rate = float64(e.Waiting-prev.waiting) / dt
		}
		c.folders[key] = next
		c.mu.Unlock()
	case walbackup.EventRestorePoint:
		c.restorePoints.WithLabelValues(key[:]...).Inc()
		c.restorePointTime.WithLabelValues(key[:]...).Set(float64(e.Time.UnixNano()) / 1e9)
		c.mu.Lock()
		if e.Time.After(c.newest[key]) {
			c.newest[key] = e.Time
		}
		c.mu.Unlock()
	case walbackup.EventDrill:
		result, passed := "failed", 0.0
		if e.Passed {
			result, passed = "passed", 1
		}
		c.drills.WithLabelValues(job, e.Machine, result).Inc()
		c.drillPassed.WithLabelValues(key[:]...).Set(passed)
	}
}

// allShipped records that everything instance key had archived is stored
// as of now.
func (c *Collector) allShipped(key [3]string) {
	now := c.clk.Now()
	c.lastShipped.WithLabelValues(key[:]...).Set(float64(now.UnixNano()) / 1e9)
	c.mu.Lock()
	c.shipped[key] = now
	c.mu.Unlock()
}

// kindOf is a session's kind as a label.
func kindOf(s session.Session) string {
	if s.Kind == "" {
		return "unknown"
	}
	return string(s.Kind)
}
