package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/metrics"
	"github.com/pglogship/pglogship/walbackup"
)

func newRunCmd(g *globals) *cobra.Command {
	var metricsAddr, holder string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the configured jobs as a service until SIGTERM or SIGINT",
		Long: `run runs every job of the configuration through one Runner: each enabled job
runs in exactly one of the processes sharing the session store, its child
job shipping WAL every interval and its parent job taking restore points on
its schedule. A job's "enabled" key (default true) is written to the store
at start-up. SIGTERM or SIGINT stop the jobs (their child sessions end as
stopped), release their leases and exit 0. Logs go to stderr (slog).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if metricsAddr == "" {
				metricsAddr = os.Getenv("PGLOGSHIP_METRICS")
			}
			return runService(cmd.Context(), g, holder, metricsAddr)
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9187; $PGLOGSHIP_METRICS)")
	cmd.Flags().StringVar(&holder, "holder", "", "this process's name among those sharing the store (default: holder key, $"+envHolder+", or host:pid)")
	return cmd
}

func runService(ctx context.Context, g *globals, holder, metricsAddr string) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	col := metrics.New(nil) // the real clock, as the jobs'
	e, err := g.open(ctx, slog.LevelInfo, func(job string, ev walbackup.Event) { col.Job(job)(ev) }, nil)
	if err != nil {
		return err
	}
	defer e.Close()

	if holder == "" {
		holder = e.cfg.Holder
	}
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	var jobs []*walbackup.Job
	for _, b := range e.jobs {
		jobs = append(jobs, b.job)
	}
	r, err := walbackup.NewRunner(walbackup.RunnerConfig{Jobs: jobs, Holder: holder, Sessions: e.store, LeaseTTL: e.cfg.LeaseTTL.Duration,
		Clock: e.clk, Logger: e.logger, Observer: col.Runner(holder)})
	if err != nil {
		return configErrorf("%s: %v", e.cfg.path, err)
	}
	for _, b := range e.jobs {
		set := r.Enable
		if b.cfg.Enabled != nil && !*b.cfg.Enabled {
			set = r.Disable
		}
		if err := set(ctx, b.cfg.Name); err != nil {
			return fmt.Errorf("record whether job %q runs: %w", b.cfg.Name, err)
		}
	}

	if metricsAddr != "" {
		srv, err := serveMetrics(metricsAddr, col, e.logger)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	e.logger.Info("running", "holder", holder, "jobs", len(jobs), "config", e.cfg.path)
	err = r.Run(ctx)
	if errors.Is(err, context.Canceled) {
		e.logger.Info("stopped: every job's session ended and its lease released", "holder", holder)
		return nil
	}
	return err
}

// serveMetrics serves the collector, with the Go and process collectors,
// at /metrics on addr.
func serveMetrics(addr string, col *metrics.Collector, logger *slog.Logger) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(col, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageErrorf("--metrics %s: %v", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", "err", err)
		}
	}()
	logger.Info("serving metrics", "url", "http://"+l.Addr().String()+"/metrics")
	return srv, nil
}
