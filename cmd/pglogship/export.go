package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/walbackup"
)

func newExportCmd(g *globals) *cobra.Command {
	var pick pickFlags
	var srv serverFlags
	var tf targetFlags
	var restorePoint, scratch, out, pgDumpDir string
	var databases []string
	cmd := &cobra.Command{
		Use:   "export --database DB... --out DIR --scratch DIR [--time T | --lsn L | --xid X | --name N | --consistent]",
		Short: "Dump databases as they were at a point in time (pg_dump's directory format), without touching the instance",
		Long: `export restores the instance to the target (the latest state by default) into
a scratch directory, starts it on a free port, dumps each --database with
the machine's own pg_dump of the instance's release into --out/<database>
(directory format: load it with pg_restore), then stops the scratch server
and removes it. --out must not exist. Without pg_dump of the release the
export stops and says which package to install (or name its directory
with --pg-dump-bin-dir).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			target, err := tf.target(cmd)
			if err != nil {
				return err
			}
			switch {
			case len(databases) == 0:
				return usageErrorf("name the databases to dump: --database DB (repeatable)")
			case out == "":
				return usageErrorf("--out DIR is required: a new directory for the dumps")
			case scratch == "":
				return usageErrorf("--scratch DIR is required: a new directory for the instance's scratch copy (removed afterwards)")
			}
			if out, err = filepath.Abs(out); err != nil {
				return usageErrorf("--out: %v", err)
			}
			e, b, to, prog, err := g.openScratch(ctx, "export", &pick, &srv, scratch)
			if err != nil {
				return err
			}
			defer e.Close()
			m := to.Guest
			res, err := b.job.Export(ctx, walbackup.ExportRequest{Machine: m.ID, SystemID: pick.systemID, DataDir: pick.dataDir,
				Target: target, RestorePoint: restorePoint, Databases: databases, Dir: out, BinDir: pgDumpDir, Staging: to})
			prog.finish()
			if err != nil {
				return planError(err)
			}
			o := exportJSON{Job: b.cfg.Name, Machine: m.ID, RestorePoint: res.RestorePoint, Target: target.String(), Dumps: res.Dumps,
				Fetched: res.Recovery.Fetched, TookSeconds: res.Took.Seconds()}
			if g.json {
				return printJSON(g.stdout, o)
			}
			fmt.Fprintf(g.stdout, "exported from restore point %s of machine %s to %s, took %s:\n", o.RestorePoint, o.Machine, o.Target,
				res.Took.Round(time.Millisecond))
			for _, d := range res.Dumps {
				fmt.Fprintf(g.stdout, "  %s -> %s (%s bytes)\n", d.Database, d.Dir, strconv.FormatInt(d.Bytes, 10))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&databases, "database", nil, "a database to dump (repeatable)")
	f.StringVar(&out, "out", "", "a new directory; each database is dumped into DIR/<database>")
	f.StringVar(&scratch, "scratch", "", "a new directory for the instance's scratch copy; removed afterwards")
	f.StringVar(&pgDumpDir, "pg-dump-bin-dir", "", "where pg_dump of the instance's release is (default: the release's usual place, then PATH)")
	tf.add(cmd, &restorePoint)
	pick.add(cmd)
	srv.add(cmd)
	jsonFlag(cmd, g)
	return cmd
}

// exportJSON is what export prints with --json (docs/cli.md).
type exportJSON struct {
	Job          string               `json:"job"`
	Machine      string               `json:"machine"`
	RestorePoint string               `json:"restore_point"`
	Target       string               `json:"target"`
	Dumps        []guest.DatabaseDump `json:"dumps"`
	Fetched      int                  `json:"wal_files_fetched"`
	TookSeconds  float64              `json:"took_seconds"`
}
