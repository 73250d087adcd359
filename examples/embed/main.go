// Command embed is the smallest host program: it wires a backup job for the
// PostgreSQL on this machine (local guest, physical images, a file-system
// repository, sessions in memory) and runs it until it is interrupted. The
// program is its own guest runtime ("embed runtime").
//
//	PGHOST=/var/run/postgresql PGUSER=postgres PGLOGSHIP_REPOSITORY=/srv/backups embed
//
// PGPORT and PGPASSWORD are read too; PGLOGSHIP_WALDIR is the guest's
// temporary WAL folder (default /var/lib/pglogship/wal).
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "runtime" {
		os.Exit(runtime.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	self, err := os.Executable()
	must(err)
	port, _ := strconv.Atoi(os.Getenv("PGPORT")) // 0: 5432
	conn := runtime.ConnConfig{Host: os.Getenv("PGHOST"), Port: port, User: os.Getenv("PGUSER"), Password: os.Getenv("PGPASSWORD")}
	guests, err := local.New(local.Config{Binary: self, Args: []string{"runtime"}, Conn: conn})
	must(err)
	repo, err := fs.New(fs.Config{Root: os.Getenv("PGLOGSHIP_REPOSITORY")})
	must(err)
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "localhost"}}, Guests: guests})
	must(err)
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Embedded Job", Machines: []walbackup.Machine{{ID: "localhost"}}, Schedule: walbackup.Daily(22, 0),
		LogBackupInterval: walbackup.DefaultLogBackupInterval, WALDir: os.Getenv("PGLOGSHIP_WALDIR"),
		Hypervisor: hv, Guests: guests, Repository: repo, Sessions: memory.New(),
		Observer: func(e walbackup.Event) {
			if e.Kind != walbackup.EventIdle {
				log.Printf("%s %q %s", e.Kind, e.Session.Job, e.Message)
			}
		},
	})
	must(err)
	log.Printf("running %q and %q until interrupted", job.Name(), job.ChildName())
	log.Print(job.Run(ctx)) // the child session stops and the runtime is uninstalled first
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
