// Command ssh-guest protects a PostgreSQL on another machine, reached over
// SSH, into an SFTP repository: it enables a backup job for that machine,
// takes a restore point (the cluster's files, PostgreSQL in backup mode),
// ships the WAL, checks the repository, and prints what can be restored.
//
// Configuration, from the environment:
//
//	PGLOGSHIP_GUEST        host:port of the machine's sshd
//	PGLOGSHIP_GUEST_USER   the SSH user; it must reach PostgreSQL (default postgres)
//	PGLOGSHIP_KEY          private key file for both SSH logins
//	PGLOGSHIP_KNOWN_HOSTS  known_hosts file holding both servers' host keys
//	PGLOGSHIP_RUNTIME      the runtime built for the guest (CGO_ENABLED=0 go build ./cmd/pglogship-runtime)
//	PGLOGSHIP_WALDIR       the guest's temporary WAL folder (default /var/lib/pglogship/wal)
//	PGHOST, PGPORT         PostgreSQL in the guest: its socket folder (peer authentication) and port
//	PGLOGSHIP_SFTP         host:port of the repository's SFTP server, and
//	PGLOGSHIP_SFTP_USER, PGLOGSHIP_SFTP_PATH its user and folder
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	grt "github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/repository/sftp"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	key, err := os.ReadFile(os.Getenv("PGLOGSHIP_KEY"))
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_KEY: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_KEY: %w", err)
	}
	// Host keys are always verified: there is no insecure default.
	hostKeys, err := knownhosts.New(os.Getenv("PGLOGSHIP_KNOWN_HOSTS"))
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_KNOWN_HOSTS: %w", err)
	}
	auth := []ssh.AuthMethod{ssh.PublicKeys(signer)}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	pgPort, _ := strconv.Atoi(os.Getenv("PGPORT"))
	user := os.Getenv("PGLOGSHIP_GUEST_USER")
	if user == "" {
		user = "postgres"
	}
	guests, err := gssh.New(gssh.Config{
		User: user, Auth: auth, HostKeyCallback: hostKeys,
		Binaries: map[string]string{runtime.GOARCH: os.Getenv("PGLOGSHIP_RUNTIME")},
		BaseDir:  "pglogship-runtimes", // in the user's home
		Conn:     grt.ConnConfig{Host: os.Getenv("PGHOST"), Port: pgPort, User: user},
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	repo, err := sftp.New(ctx, sftp.Config{Addr: os.Getenv("PGLOGSHIP_SFTP"), User: os.Getenv("PGLOGSHIP_SFTP_USER"),
		Auth: auth, HostKeyCallback: hostKeys, Root: os.Getenv("PGLOGSHIP_SFTP_PATH")})
	if err != nil {
		return err
	}
	defer repo.Close()
	machine := walbackup.Machine{ID: "db1", Address: os.Getenv("PGLOGSHIP_GUEST")}
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: machine.ID, Address: machine.Address}},
		Guests: guests, Logger: logger})
	if err != nil {
		return err
	}
	store := memory.New()
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Remote DB Job", Machines: []walbackup.Machine{machine}, LogBackupInterval: walbackup.DefaultLogBackupInterval,
		WALDir: os.Getenv("PGLOGSHIP_WALDIR"), Hypervisor: hv, Guests: guests, Repository: repo, Sessions: store, Logger: logger,
	})
	if err != nil {
		return err
	}

	fmt.Printf("enable %q for %s over SSH\n", job.Name(), machine.Address)
	if err := job.Enable(ctx); err != nil {
		return err
	}
	if err := job.StartParent(ctx); err != nil {
		return err
	}
	if err := job.Disable(ctx); err != nil { // a last ship, the runtime uninstalled
		return err
	}
	for _, name := range []string{job.Name(), job.ChildName()} {
		p, err := store.List(ctx, session.Query{Job: name})
		if err != nil {
			return err
		}
		for i := len(p.Sessions) - 1; i >= 0; i-- {
			s := p.Sessions[i]
			fmt.Printf("session %-40s %-6s %-8s %d files, %d bytes\n", s.Job, s.Kind, s.State, s.Counters.Files, s.Counters.Bytes)
		}
	}
	rep, err := job.Verify(ctx)
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("verify: %v", rep.Problems)
	}
	fmt.Printf("verified: %d restore point, %d WAL files in %d bundles, %d bytes read\n", rep.RestorePoints, rep.WALFiles, rep.Bundles, rep.Bytes)
	iv, err := job.Interval(ctx, machine.ID, 0)
	if err != nil {
		return err
	}
	fmt.Printf("restorable from %s to %s\n", iv.Earliest.LSN, iv.Latest.LSN)
	return nil
}
