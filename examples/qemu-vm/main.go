// Command qemu-vm protects PostgreSQL in a QEMU/KVM virtual machine with
// image and WAL backups, and restores it to a point in time. It runs in
// steps, because booting a VM is the host's business:
//
//	qemu-vm backup   a child session and two parent sessions: a full and an
//	                 incremental image (QMP blockdev-backup with a dirty
//	                 bitmap, PostgreSQL in backup mode, the guest frozen
//	                 through its agent), the WAL shipped
//	qemu-vm ship     a child session that ships the WAL archived in the guest
//	                 since (it waits in the guest's temporary folder while no
//	                 session runs)
//	qemu-vm restore  restore the image chain for PGLOGSHIP_TARGET (RFC 3339;
//	                 empty: the latest state) into the new qcow2 PGLOGSHIP_DISK
//	qemu-vm recover  in a VM booted from PGLOGSHIP_DISK with PostgreSQL's start
//	                 at boot disabled, reached at PGLOGSHIP_RECOVER_GUEST,
//	                 start PostgreSQL in recovery to PGLOGSHIP_TARGET, its WAL
//	                 fetched from the repository
//
// The job keeps its records in memory and its repository in
// PGLOGSHIP_REPOSITORY, so both steps see the same backups.
//
// Configuration, from the environment: PGLOGSHIP_QMP and PGLOGSHIP_QGA (the
// VM's QMP and guest agent sockets), PGLOGSHIP_NODE (the qcow2 node, default
// disk0), PGLOGSHIP_GUEST (its sshd, host:port), PGLOGSHIP_KEY and
// PGLOGSHIP_KNOWN_HOSTS (SSH login as postgres, host keys verified),
// PGLOGSHIP_RUNTIME (the runtime built for the guest), PGLOGSHIP_WORKDIR (a
// folder QEMU can write), PGLOGSHIP_PG_VERSION (default 15).
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"runtime"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	grt "github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor/qemu"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: qemu-vm backup|ship|restore|recover (configuration in the environment: see the package doc)")
	}
	if err := run(os.Args[1]); err != nil {
		log.Fatal(err)
	}
}

func run(step string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	key, err := os.ReadFile(os.Getenv("PGLOGSHIP_KEY"))
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_KEY: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_KEY: %w", err)
	}
	hostKeys, err := knownhosts.New(os.Getenv("PGLOGSHIP_KNOWN_HOSTS"))
	if err != nil {
		return fmt.Errorf("PGLOGSHIP_KNOWN_HOSTS: %w", err)
	}
	version := os.Getenv("PGLOGSHIP_PG_VERSION")
	if version == "" {
		version = "15"
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	guests, err := gssh.New(gssh.Config{
		User: "postgres", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hostKeys,
		Binaries: map[string]string{runtime.GOARCH: os.Getenv("PGLOGSHIP_RUNTIME")}, BaseDir: "/var/lib/pglogship/runtimes",
		Conn: grt.ConnConfig{Host: "/var/run/postgresql", Port: 5432, User: "postgres"}, Logger: logger,
	})
	if err != nil {
		return err
	}
	vm := qemu.VM{ID: "vm1", QMPSocket: os.Getenv("PGLOGSHIP_QMP"), GuestAgentSocket: os.Getenv("PGLOGSHIP_QGA"),
		SSHAddr: os.Getenv("PGLOGSHIP_GUEST"), Node: os.Getenv("PGLOGSHIP_NODE")}
	hv, err := qemu.New(qemu.Config{VMs: []qemu.VM{vm}, WorkDir: os.Getenv("PGLOGSHIP_WORKDIR"), Logger: logger})
	if err != nil {
		return err
	}
	repo, err := fs.New(fs.Config{Root: os.Getenv("PGLOGSHIP_REPOSITORY")})
	if err != nil {
		return err
	}
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "VM Job", Machines: []walbackup.Machine{{ID: vm.ID, Address: vm.SSHAddr}},
		LogBackupInterval: walbackup.DefaultLogBackupInterval, Quiesce: true,
		Hypervisor: hv, Guests: guests, Repository: repo, Sessions: memory.New(), Logger: logger,
	})
	if err != nil {
		return err
	}
	target := walbackup.Latest()
	if at := os.Getenv("PGLOGSHIP_TARGET"); at != "" {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return fmt.Errorf("PGLOGSHIP_TARGET: %w", err)
		}
		target = walbackup.ToTime(t)
	}

	switch step {
	case "backup", "ship":
		if err := job.Enable(ctx); err != nil {
			return err
		}
		for i := 0; step == "backup" && i < 2; i++ {
			if err := job.StartParent(ctx); err != nil { // the first is full, the next builds on it
				return err
			}
		}
		if err := job.Disable(ctx); err != nil { // a last ship, the runtime uninstalled
			return err
		}
		iv, err := job.Interval(ctx, vm.ID, 0)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %d restore points; restorable from %s to %s (last commit %s)\n", step, iv.RestorePoints,
			iv.Earliest.LSN, iv.Latest.LSN, iv.Latest.Time.Format(time.RFC3339Nano))
	case "restore":
		plan, err := job.Plan(ctx, walbackup.RestoreRequest{Machine: vm.ID, Target: target})
		if err != nil {
			return err
		}
		for _, m := range plan.Manifests {
			fmt.Printf("restore point %s: full %v, %d bytes stored\n", m.ID, m.Full, m.Objects[0].Size)
		}
		if err := job.RestoreImage(ctx, plan, os.Getenv("PGLOGSHIP_DISK"), nil); err != nil {
			return err
		}
		fmt.Printf("restored the chain for %s to %s: boot it with PostgreSQL's start at boot disabled, then run the recover step\n",
			target, os.Getenv("PGLOGSHIP_DISK"))
	case "recover":
		plan, err := job.Plan(ctx, walbackup.RestoreRequest{Machine: vm.ID, Target: target})
		if err != nil {
			return err
		}
		res, err := job.Recover(ctx, plan, walbackup.Machine{ID: "restored", Address: os.Getenv("PGLOGSHIP_RECOVER_GUEST")},
			walbackup.RecoveryOptions{
				DataDir:    "/var/lib/postgresql/" + version + "/main",
				ConfigFile: "/etc/postgresql/" + version + "/main/postgresql.conf",
			})
		if err != nil {
			return err
		}
		fmt.Printf("recovered to %s: promoted %v at %s on timeline %d, %d WAL files fetched\n", target, res.Promoted, res.LSN, res.Timeline, res.Fetched)
	default:
		return fmt.Errorf("unknown step %q: backup, ship, restore or recover", step)
	}
	return nil
}
