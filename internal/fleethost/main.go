// Command fleethost is the host program of the multi-process tests: a
// process of its own that runs the jobs its configuration lists through
// one walbackup.Runner, on a PostgreSQL session store and an S3
// repository it shares with the other processes. Its guests are dir
// guests (guest/guesttest, a folder each) or real PostgreSQL servers on
// this machine (guest/local). It prints what the Runner and the jobs
// report on stdout, one JSON object per line, and logs on stderr. SIGTERM
// or SIGINT stop it gracefully: the jobs' sessions end and the leases are
// released.
//
// Usage: fleethost CONFIG.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository/s3"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// Config is the file fleethost reads.
type Config struct {
	Holder    string      `json:"holder"`
	Store     string      `json:"store"`      // the session store's connection string
	LeaseTTL  string      `json:"lease_ttl"`  // a time.Duration
	Interval  string      `json:"interval"`   // the jobs' LogBackupInterval
	ReadDelay string      `json:"read_delay"` // slept before each file a dir guest reads; "" for none
	Runtime   string      `json:"runtime"`    // the runtime binary, for jobs on real PostgreSQL
	S3        S3Config    `json:"s3"`
	Jobs      []JobConfig `json:"jobs"`
}

// S3Config locates the shared repository.
type S3Config struct {
	Endpoint  string `json:"endpoint"`
	Bucket    string `json:"bucket"`
	Prefix    string `json:"prefix"`
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

// JobConfig is one job of one machine, "vm1": a dir guest, or a real
// PostgreSQL server shipping through WALDir.
type JobConfig struct {
	Name     string              `json:"name"`
	DirGuest string              `json:"dir_guest,omitempty"`
	Postgres *runtime.ConnConfig `json:"postgres,omitempty"`
	WALDir   string              `json:"wal_dir,omitempty"`
}

// Line is one line of stdout: an event of the Runner (Source "runner")
// or of a job (Source "job").
type Line struct {
	PID     int       `json:"pid"`
	Holder  string    `json:"holder"`
	Time    time.Time `json:"time"`
	Source  string    `json:"source"`
	Kind    string    `json:"kind"`
	Job     string    `json:"job,omitempty"`
	Session string    `json:"session,omitempty"`
	Files   int       `json:"files,omitempty"`
	Token   int64     `json:"token,omitempty"`
	LagMS   int64     `json:"lag_ms,omitempty"` // a batch's Event.Lag
	Message string    `json:"message,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fleethost CONFIG.json")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "fleethost:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	ttl, err := time.ParseDuration(cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("lease_ttl: %w", err)
	}
	interval, err := time.ParseDuration(cfg.Interval)
	if err != nil {
		return fmt.Errorf("interval: %w", err)
	}
	var delay time.Duration
	if cfg.ReadDelay != "" {
		if delay, err = time.ParseDuration(cfg.ReadDelay); err != nil {
			return fmt.Errorf("read_delay: %w", err)
		}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("holder", cfg.Holder)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	store, err := postgres.Open(ctx, postgres.Config{ConnString: cfg.Store, Logger: logger})
	if err != nil {
		return err
	}
	defer store.Close()
	repo, err := s3.New(s3.Config{Endpoint: cfg.S3.Endpoint, Bucket: cfg.S3.Bucket, Prefix: cfg.S3.Prefix, Insecure: true,
		AccessKey: cfg.S3.AccessKey, SecretKey: cfg.S3.SecretKey, Region: "us-east-1"})
	if err != nil {
		return err
	}
	clk := clock.New()
	out := &printer{enc: json.NewEncoder(os.Stdout), holder: cfg.Holder, pid: os.Getpid(), clk: clk}
	var jobs []*walbackup.Job
	for _, jc := range cfg.Jobs {
		var d guest.Deployer
		switch {
		case jc.DirGuest != "":
			dd := guesttest.NewDirDeployer(map[string]string{"vm1": jc.DirGuest})
			dd.ReadDelay, dd.Clock = delay, clk
			d = dd
		case jc.Postgres != nil && cfg.Runtime != "":
			if d, err = local.New(local.Config{Binary: cfg.Runtime, Conn: *jc.Postgres, Logger: logger}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("job %q: a dir_guest, or postgres with a runtime binary, is required", jc.Name)
		}
		name := jc.Name
		j, err := walbackup.NewJob(walbackup.Config{
			Name: name, Machines: []walbackup.Machine{{ID: "vm1"}}, LogBackupInterval: interval, WALDir: jc.WALDir,
			Hypervisor: hypervisortest.New(clk, hypervisor.Machine{ID: "vm1"}), Guests: d, Repository: repo, Sessions: store,
			Clock: clk, Logger: logger.With("job", name),
			Observer: func(e walbackup.Event) {
				if e.Kind == walbackup.EventIdle {
					return
				}
				out.print(Line{Source: "job", Kind: string(e.Kind), Job: name, Session: e.Session.ID, Files: e.Files,
					LagMS: e.Lag.Milliseconds(), Message: e.Message})
			},
		})
		if err != nil {
			return fmt.Errorf("job %q: %w", name, err)
		}
		jobs = append(jobs, j)
	}
	r, err := walbackup.NewRunner(walbackup.RunnerConfig{Jobs: jobs, Holder: cfg.Holder, Sessions: store, LeaseTTL: ttl, Clock: clk,
		Logger: logger, Observer: func(e walbackup.RunnerEvent) {
			if e.Kind == walbackup.RunnerIdle {
				return
			}
			out.print(Line{Source: "runner", Kind: string(e.Kind), Job: e.Job, Token: e.Lease.Token, Message: e.Message})
		}})
	if err != nil {
		return err
	}
	out.print(Line{Source: "runner", Kind: "process_started"})
	if err := r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// printer writes Lines to stdout, one at a time.
type printer struct {
	mu     sync.Mutex
	enc    *json.Encoder
	holder string
	pid    int
	clk    clock.Clock
}

func (p *printer) print(l Line) {
	l.PID, l.Holder, l.Time = p.pid, p.holder, p.clk.Now().UTC()
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.enc.Encode(l) // stdout gone: nothing to tell
}
