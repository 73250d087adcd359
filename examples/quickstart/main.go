// Command quickstart runs pglogship end to end on the embedded default: the
// PostgreSQL on this machine, the local guest, the physical hypervisor, a
// file-system repository and the PostgreSQL session store.
//
// It enables a backup job (the child job ships WAL every minute), writes
// timestamped rows, takes a restore point, writes two more batches, lets
// the child job ship, restores the instance to a time between those two
// batches into a new directory, starts it, checks it holds exactly the rows
// committed by then, proves the restore point with a restore drill, and
// prints what it verified. `make demo` starts a throw-away PostgreSQL and
// runs it with PGLOGSHIP_DEMO_DSN set.
//
// The example is its own guest runtime: run with the argument "runtime" it
// acts as the runtime component, so the local deployer needs no separate
// binary.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

const jobName = "Quickstart Job"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "runtime" {
		os.Exit(runtime.Main())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	dsn := os.Getenv("PGLOGSHIP_DEMO_DSN")
	if dsn == "" {
		return errors.New("PGLOGSHIP_DEMO_DSN is not set; run `make demo`, which starts a throw-away PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_DEMO_DSN: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	var dataDir string
	if err := db.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return err
	}

	// The embedded default: everything on this machine. With
	// PGLOGSHIP_DEMO_STATE the state stays there, with a configuration
	// file for the pglogship command (make demo runs its info on it).
	work := os.Getenv("PGLOGSHIP_DEMO_STATE")
	if work == "" {
		if work, err = os.MkdirTemp("", "pglogship-quickstart-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	if err := os.Chmod(work, 0o755); err != nil { // the server's OS user reaches the restored copy
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	conn := runtime.ConnConfig{Host: pc.Host, Port: int(pc.Port), User: pc.User, Password: pc.Password}
	guests, err := local.New(local.Config{Binary: self, Args: []string{"runtime"}, Conn: conn, Logger: logger})
	if err != nil {
		return err
	}
	repo, err := fs.New(fs.Config{Root: filepath.Join(work, "repository")})
	if err != nil {
		return err
	}
	store, err := postgres.Open(ctx, postgres.Config{ConnString: dsn})
	if err != nil {
		return err
	}
	defer store.Close()
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "localhost"}}, Guests: guests, Logger: logger})
	if err != nil {
		return err
	}
	shipped := make(chan walbackup.Event, 100)
	job, err := walbackup.NewJob(walbackup.Config{
		Name: jobName, Machines: []walbackup.Machine{{ID: "localhost"}}, LogBackupInterval: time.Minute,
		WALDir: filepath.Join(work, "wal"), Hypervisor: hv, Guests: guests, Repository: repo, Sessions: store,
		Clock: clock.New(), Logger: logger,
		Observer: func(e walbackup.Event) {
			if e.Kind == walbackup.EventBatchShipped {
				shipped <- e
			}
		},
	})
	if err != nil {
		return err
	}

	if err := writeConfig(work); err != nil {
		return err
	}
	fmt.Printf("1. enable %q: the child job %q ships WAL every minute\n", job.Name(), job.ChildName())
	if err := job.Enable(ctx); err != nil {
		return err
	}
	defer job.Disable(context.WithoutCancel(ctx))
	if _, err := db.Exec(ctx, "CREATE TABLE IF NOT EXISTS quickstart (batch int, n int, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		return err
	}
	insert := func(batch int) error {
		_, err := db.Exec(ctx, "INSERT INTO quickstart (batch, n) SELECT $1, generate_series(1, 100)", batch)
		return err
	}
	if err := insert(1); err != nil {
		return err
	}
	fmt.Println("2. wrote batch 1; the parent job takes a restore point (PostgreSQL in backup mode around the image)")
	if err := job.StartParent(ctx); err != nil {
		return err
	}
	if err := insert(2); err != nil {
		return err
	}
	var target time.Time
	if err := db.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&target); err != nil {
		return err
	}
	if err := insert(3); err != nil {
		return err
	}
	var last string
	if err := db.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&last); err != nil {
		return err
	}
	fmt.Printf("3. wrote batch 2, noted %s, wrote batch 3; waiting for the child job to ship %s\n", target.Format(time.RFC3339Nano), last)
	if err := waitShipped(ctx, job, repo, shipped, last); err != nil {
		return err
	}

	iv, err := job.Interval(ctx, "localhost", 0)
	if err != nil {
		return err
	}
	fmt.Printf("4. restorable from %s to %s (%d restore point)\n", iv.Earliest.Time.Format(time.RFC3339), iv.Latest.Time.Format(time.RFC3339Nano), iv.RestorePoints)

	owner, err := ownerOf(dataDir)
	if err != nil {
		return err
	}
	restored := filepath.Join(work, "restored")
	to := restoreTo(restored, filepath.Join(work, "socket"), pc.Host, owner)
	if err := mkdirFor(to.Recovery.SocketDir, owner); err != nil {
		return err
	}
	res, err := job.Restore(ctx, walbackup.RestoreRequest{Machine: "localhost", Target: walbackup.ToTime(target)}, to)
	if err != nil {
		return err
	}
	defer stopServer(guests, restored)
	fmt.Printf("5. restored restore point %s and its WAL to %s into %s: PostgreSQL promoted at %s on timeline %d (%d WAL files fetched)\n",
		res.Plan.RestorePoint.ID, target.Format(time.RFC3339Nano), restored, res.Recovery.LSN, res.Recovery.Timeline, res.Recovery.Fetched)

	rc := pc.Copy()
	rc.Port = uint16(to.Recovery.Port)
	if strings.HasPrefix(pc.Host, "/") {
		rc.Host = to.Recovery.SocketDir
	}
	counts, err := batchCounts(ctx, rc)
	if err != nil {
		return fmt.Errorf("query the restored instance: %w", err)
	}
	if counts != "1:100 2:100" {
		return fmt.Errorf("the restored instance holds batches %q, want 1:100 2:100", counts)
	}
	fmt.Printf("6. verified: the restored instance holds batches 1 and 2 (100 rows each) and none of batch 3, committed after %s\n",
		target.Format(time.RFC3339Nano))

	stopServer(guests, restored)
	scratch := restoreTo(filepath.Join(work, "drill"), to.Recovery.SocketDir, pc.Host, owner)
	drill, err := job.Drill(ctx, walbackup.DrillRequest{Machine: "localhost", Scratch: scratch, SQL: []string{"SELECT count(*) FROM quickstart"}})
	if err != nil {
		return err
	}
	if !drill.Passed {
		return fmt.Errorf("the restore drill failed: %v", drill.Failures)
	}
	fmt.Printf("7. restore drill of %s passed: databases %v connect, the query ran (%v)\n", drill.RestorePoint, drill.Databases, drill.Took.Round(time.Millisecond))

	if err := job.Disable(ctx); err != nil {
		return err
	}
	fmt.Println("8. disabled the job; sessions in the session store:")
	for _, name := range []string{job.Name(), job.ChildName()} {
		p, err := store.List(ctx, session.Query{Job: name})
		if err != nil {
			return err
		}
		for i := len(p.Sessions) - 1; i >= 0; i-- {
			s := p.Sessions[i]
			fmt.Printf("   %-36s %-7s %-8s files %d, %d bytes\n", s.Job, s.Kind, s.State, s.Counters.Files, s.Counters.Bytes)
		}
	}
	return nil
}

// writeConfig writes pglogship.toml into work: this job for the
// pglogship command. The connection string stays in the environment.
func writeConfig(work string) error {
	cfg := fmt.Sprintf(`# Written by examples/quickstart: its job, for the pglogship command.
[store]
dsn_env = "PGLOGSHIP_DEMO_DSN"

[repository]
type = "fs"
path = %q

[[job]]
name = %q
interval = "1m"
wal_dir = %q

[job.guest]
type = "local"

[job.guest.postgres]
dsn_env = "PGLOGSHIP_DEMO_DSN"

[[job.machine]]
id = "localhost"
`, filepath.Join(work, "repository"), jobName, filepath.Join(work, "wal"))
	return os.WriteFile(filepath.Join(work, "pglogship.toml"), []byte(cfg), 0o600)
}

// waitShipped waits until the child job has shipped the segment name.
func waitShipped(ctx context.Context, job *walbackup.Job, repo *fs.Repo, shipped <-chan walbackup.Event, name string) error {
	var in bool
	for !in {
		select {
		case <-shipped:
		case <-ctx.Done():
			return fmt.Errorf("segment %s was never shipped: %w", name, ctx.Err())
		}
		var err error
		if in, err = holds(ctx, job, repo, name); err != nil {
			return err
		}
	}
	fmt.Printf("   shipped: %s is in the repository\n", name)
	return nil
}

func holds(ctx context.Context, job *walbackup.Job, repo *fs.Repo, name string) (bool, error) {
	iv, err := job.Interval(ctx, "localhost", 0)
	if err != nil {
		return false, err
	}
	err = walbackup.FetchWAL(ctx, repo, iv.Instance, name, nil, io.Discard)
	if errors.Is(err, repository.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// restoreTo is where the quickstart restores: a new directory, a port of
// its own, a socket folder of its own when the original listens on one, and
// TCP on 127.0.0.1 otherwise; PostgreSQL runs as the original's owner.
func restoreTo(dir, socketDir, host, owner string) walbackup.RestoreTo {
	listen := "127.0.0.1"
	if strings.HasPrefix(host, "/") {
		listen = "" // as the original: the socket only
	}
	return walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "localhost"}, Recovery: walbackup.RecoveryOptions{
		Port: freePort(), SocketDir: socketDir, OSUser: owner, Settings: map[string]string{"listen_addresses": listen}}}
}

func batchCounts(ctx context.Context, cfg *pgx.ConnConfig) (string, error) {
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close(context.WithoutCancel(ctx))
	rows, err := c.Query(ctx, "SELECT batch || ':' || count(*) FROM quickstart GROUP BY batch ORDER BY batch")
	if err != nil {
		return "", err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(got, " "), err
}

// stopServer stops the restored server through a runtime; idempotent.
func stopServer(guests *local.Deployer, dir string) {
	ctx := context.Background()
	rt, err := guests.Deploy(ctx, guest.Target{Machine: "localhost"})
	if err != nil {
		return
	}
	defer rt.Close(ctx)
	if sc, ok := rt.(guest.ServerControl); ok {
		_ = sc.StopServer(ctx, dir)
	}
}

// mkdirFor makes a folder that belongs to the OS user name.
func mkdirFor(path, name string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

func ownerOf(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(st.Sys().(*syscall.Stat_t).Uid), 10))
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 5433
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
