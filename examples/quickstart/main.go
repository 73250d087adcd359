// Command quickstart runs pglogship on the embedded default: PostgreSQL on
// this machine, the local guest, the physical hypervisor, a file-system
// repository and a session store.
//
// Today it runs what exists for real and says what does not exist yet: it
// checks a real PostgreSQL against the WAL-shipping requirements, opens the
// PostgreSQL session store on it (creating and migrating its schema) and
// lists the child job's sessions. `make demo` starts a throw-away
// PostgreSQL and runs it with PGLOGSHIP_DEMO_DSN set.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
)

const job = "Quickstart Job"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	dsn := os.Getenv("PGLOGSHIP_DEMO_DSN")
	if dsn == "" {
		return fmt.Errorf("PGLOGSHIP_DEMO_DSN is not set; run `make demo`, which starts a throw-away PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	inst, err := scan(ctx, dsn)
	if err != nil {
		return err
	}
	fmt.Printf("PostgreSQL %d, system identifier %d, wal_level=%s, archive_mode=%s\n",
		inst.Version, inst.SystemID, inst.WALLevel, inst.ArchiveMode)
	if err := guest.CheckRequirements(inst, func(string) bool { return false }); err != nil {
		return fmt.Errorf("requirements: %w", err)
	}
	fmt.Println("requirements for WAL shipping: met")

	store, err := postgres.Open(ctx, postgres.Config{ConnString: dsn})
	if err != nil {
		return err
	}
	defer store.Close()
	fmt.Printf("session store: schema %q at version %d\n", postgres.DefaultSchema, postgres.SchemaVersion)
	child := job + " PostgreSQL Log Backup"
	page, err := store.List(ctx, session.Query{Job: child})
	if err != nil {
		return err
	}
	fmt.Printf("sessions of %q: %d\n", child, len(page.Sessions))

	fmt.Println(`
Not run here yet (nothing below is simulated):
  - the child job on this machine: walbackup.Job exists and its tests run it
    on real PostgreSQL over SSH; wiring it into this quickstart comes with
    the restore issue (7)
  - application-aware parent images with restore point manifests (issue 6)
  - restore to a point in time (issue 7)`)
	return nil
}

// scan reads what the runtime's scan will report, straight over pgx.
func scan(ctx context.Context, dsn string) (guest.Instance, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return guest.Instance{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	var inst guest.Instance
	var version, sysid string
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version_num'), system_identifier::text,
		current_setting('wal_level'), current_setting('archive_mode'),
		current_setting('archive_command'), current_setting('archive_library'),
		current_setting('data_directory')
		FROM pg_control_system()`).Scan(&version, &sysid, &inst.WALLevel, &inst.ArchiveMode,
		&inst.ArchiveCommand, &inst.ArchiveLibrary, &inst.DataDir)
	if err != nil {
		return guest.Instance{}, fmt.Errorf("scan instance: %w", err)
	}
	if inst.Version, err = strconv.Atoi(version); err != nil {
		return guest.Instance{}, fmt.Errorf("scan instance: server_version_num %q: %w", version, err)
	}
	if inst.SystemID, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return guest.Instance{}, fmt.Errorf("scan instance: system identifier %q: %w", sysid, err)
	}
	inst.Running = true
	return inst, nil
}
