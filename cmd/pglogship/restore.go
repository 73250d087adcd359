package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// pickFlags choose the machine and instance (restore, drill).
type pickFlags struct {
	machine, dataDir string
	systemID         uint64
}

func (p *pickFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.machine, "machine", "", "the machine, by id, when the job has several")
	cmd.Flags().StringVar(&p.dataDir, "data-dir", "", "the instance, by the data directory its restore points were taken of, when the machine has several")
	cmd.Flags().Uint64Var(&p.systemID, "system-id", 0, "the instance, by system identifier (default: the one with the newest restore point)")
}

// machine returns the machine the flags name, or the job's only one.
func (p *pickFlags) pick(b *builtJob) (walbackup.Machine, error) {
	var ids []string
	for _, m := range b.cfg.Machines {
		if m.ID == p.machine || p.machine == "" && len(b.cfg.Machines) == 1 {
			return walbackup.Machine{ID: m.ID, Address: m.Address}, nil
		}
		ids = append(ids, m.ID)
	}
	if p.machine == "" {
		return walbackup.Machine{}, usageErrorf("job %q has %d machines: name one with --machine (%s)", b.cfg.Name, len(ids), strings.Join(ids, ", "))
	}
	return walbackup.Machine{}, usageErrorf("job %q has no machine %q (machines: %s)", b.cfg.Name, p.machine, strings.Join(ids, ", "))
}

// serverFlags say how a restored (or drilled) server starts.
type serverFlags struct {
	port                                int
	socketDir, osUser, binDir, pgConfig string
	listen                              string
	settings                            []string
}

func (s *serverFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&s.port, "port", 0, "port of the restored server, beside the original")
	cmd.Flags().StringVar(&s.socketDir, "socket-dir", "", "unix socket directory of the restored server")
	cmd.Flags().StringVar(&s.osUser, "os-user", "", "OS user that runs the restored server (default: the data directory's owner)")
	cmd.Flags().StringVar(&s.binDir, "bin-dir", "", "PostgreSQL's bin directory (default: found from the release)")
	cmd.Flags().StringVar(&s.pgConfig, "pg-config-file", "", "postgresql.conf when it lives outside the data directory (Debian)")
	cmd.Flags().StringVar(&s.listen, "listen", "", "listen_addresses of the restored server (default: as configured)")
	cmd.Flags().StringArrayVar(&s.settings, "set", nil, "more postgresql.conf settings, NAME=VALUE (repeatable)")
}

func (s *serverFlags) options() (walbackup.RecoveryOptions, error) {
	o := walbackup.RecoveryOptions{Port: s.port, SocketDir: s.socketDir, OSUser: s.osUser, BinDir: s.binDir, ConfigFile: s.pgConfig,
		Settings: map[string]string{}}
	if s.port < 0 || s.port > 65535 {
		return o, usageErrorf("--port %d: give a port from 1 to 65535", s.port)
	}
	for _, kv := range s.settings {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return o, usageErrorf("--set %q: write NAME=VALUE", kv)
		}
		o.Settings[k] = v
	}
	if s.listen != "" {
		o.Settings["listen_addresses"] = s.listen
	}
	return o, nil
}

func newRestoreCmd(g *globals) *cobra.Command {
	var pick pickFlags
	var srv serverFlags
	var tf targetFlags
	var (
		restorePoint, to, onto  string
		inPlace, force, noStart bool
		tablespaces             []string
	)
	cmd := &cobra.Command{
		Use:   "restore (--to DIR | --in-place --force) [--time T | --lsn L | --xid X | --name N | --consistent]",
		Short: "Restore an instance to its latest state or a point in time, into a new directory or in place",
		Long: `restore brings an instance back from a restore point and the shipped WAL: to
the end of the shipped WAL (the default), to a time (--time), an LSN
(--lsn), a transaction (--xid), a named restore point (--name), or just
consistent (--consistent). The target is checked against the restorable
interval before anything is written.

--to DIR restores into a new directory and starts PostgreSQL there on
--port, beside the original (or restores the files only, with --no-start).
--in-place replaces the running instance: its server is stopped and its
data directory moved aside (kept, never deleted). That happens only with
--force; without it restore refuses with exit code 4 and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			target, err := tf.target(cmd)
			if err != nil {
				return err
			}
			opts, err := srv.options()
			if err != nil {
				return err
			}
			switch {
			case to == "" && !inPlace:
				return usageErrorf("say where to restore: --to DIR (a new directory) or --in-place --force")
			case to != "" && inPlace:
				return usageErrorf("--to and --in-place exclude each other")
			case inPlace && !force:
				return &refusedError{"restore --in-place replaces the running instance (its server is stopped, its data directory moved aside); " +
					"nothing was changed: add --force to do it, or restore beside it with --to DIR --port PORT"}
			case inPlace && noStart:
				return usageErrorf("--in-place restarts the instance: --no-start applies to --to only")
			case to != "" && !noStart && srv.port == 0:
				return usageErrorf("--to needs --port (a free port for the restored server, beside the original) or --no-start")
			}
			if to != "" {
				if to, err = filepath.Abs(to); err != nil {
					return usageErrorf("--to: %v", err)
				}
			}
			mapping := map[string]string{}
			for _, kv := range tablespaces {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" || !filepath.IsAbs(v) {
					return usageErrorf("--tablespace %q: write OID=DIR or OLDDIR=DIR, DIR absolute", kv)
				}
				mapping[k] = v
			}

			e, b, m, prog, err := g.openMachine(ctx, &pick)
			if err != nil {
				return err
			}
			defer e.Close()
			if !noStart {
				if err := b.startsServer("restore without --no-start"); err != nil {
					return err
				}
			}
			req := walbackup.RestoreRequest{Machine: m.ID, SystemID: pick.systemID, DataDir: pick.dataDir, Target: target, RestorePoint: restorePoint}
			dest := walbackup.RestoreTo{Image: to, Guest: m, Recovery: opts, Tablespaces: mapping}
			if onto != "" {
				if inPlace {
					return usageErrorf("--onto restores beside, with --to: --in-place replaces the instance on its own machine")
				}
				if dest.Guest, err = (&pickFlags{machine: onto}).pick(b); err != nil {
					return err
				}
			}
			if noStart {
				dest.Guest = walbackup.Machine{}
			}
			if inPlace {
				plan, err := b.job.Plan(ctx, req)
				if err != nil {
					return planError(err)
				}
				dest.Image = plan.RestorePoint.DataDir
				if pick.dataDir != "" {
					dest.Image = pick.dataDir
				}
				if dest.Image == "" {
					return usageErrorf("restore point %s does not record its data directory: name it with --data-dir", plan.RestorePoint.ID)
				}
				dest.Force = true
				dest.Recovery.Archive = true // in place, it goes on being protected
			}
			res, err := b.job.Restore(ctx, req, dest)
			prog.finish()
			if errors.Is(err, walbackup.ErrTargetExists) {
				return &refusedError{fmt.Sprintf("%v; nothing was changed: restore into a new directory", err)}
			}
			if err != nil {
				if res.Recovery.Log != "" {
					fmt.Fprintf(g.stderr, "server log of the recovery:\n%s\n", res.Recovery.Log)
				}
				return planError(err)
			}
			out := restoreJSON{Job: b.cfg.Name, Machine: m.ID, SystemID: strconv.FormatUint(res.Plan.Instance.SystemID, 10),
				RestorePoint: res.Plan.RestorePoint.ID, Target: target.String(), Directory: dest.Image, InPlace: inPlace,
				Started: dest.Guest.ID != "", Promoted: res.Recovery.Promoted, Timeline: res.Recovery.Timeline, LSN: res.Recovery.LSN.String(),
				Fetched: res.Recovery.Fetched, TookSeconds: res.Took.Seconds()}
			if g.json {
				return printJSON(g.stdout, out)
			}
			fmt.Fprintf(g.stdout, "restored restore point %s of machine %s (system id %s) to %s into %s\n", out.RestorePoint, out.Machine,
				out.SystemID, out.Target, out.Directory)
			if out.Started {
				fmt.Fprintf(g.stdout, "PostgreSQL promoted %v at %s on timeline %d; %d WAL files fetched; took %s\n", out.Promoted, out.LSN,
					out.Timeline, out.Fetched, res.Took.Round(time.Millisecond))
			}
			return nil
		},
	}
	f := cmd.Flags()
	tf.add(cmd, &restorePoint)
	f.StringVar(&to, "to", "", "restore into this new directory")
	f.StringVar(&onto, "onto", "", "restore onto this other machine of the job (its release is checked first), into --to there")
	f.BoolVar(&inPlace, "in-place", false, "replace the running instance (needs --force)")
	f.BoolVar(&force, "force", false, "allow --in-place")
	f.BoolVar(&noStart, "no-start", false, "with --to: restore the files only, do not start PostgreSQL")
	f.StringArrayVar(&tablespaces, "tablespace", nil, "put a tablespace elsewhere: OID=DIR or OLDDIR=DIR (repeatable)")
	pick.add(cmd)
	srv.add(cmd)
	jsonFlag(cmd, g)
	return cmd
}

// restoreJSON is what restore prints with --json (docs/cli.md).
type restoreJSON struct {
	Job          string  `json:"job"`
	Machine      string  `json:"machine"`
	SystemID     string  `json:"system_id"`
	RestorePoint string  `json:"restore_point"`
	Target       string  `json:"target"`
	Directory    string  `json:"directory"`
	InPlace      bool    `json:"in_place"`
	Started      bool    `json:"started"`
	Promoted     bool    `json:"promoted"`
	Timeline     uint32  `json:"timeline"`
	LSN          string  `json:"lsn"`
	Fetched      int     `json:"wal_files_fetched"`
	TookSeconds  float64 `json:"took_seconds"`
}

// targetFlags say to what point a restore or an export goes.
type targetFlags struct {
	at, lsn, name         string
	xid                   uint32
	consistent, exclusive bool
}

// add adds the target flags, and --restore-point into restorePoint.
func (tf *targetFlags) add(cmd *cobra.Command, restorePoint *string) {
	f := cmd.Flags()
	f.StringVar(&tf.at, "time", "", "the transactions committed at or before this time (RFC 3339, e.g. 2026-12-07T09:30:00.123456Z)")
	f.StringVar(&tf.lsn, "lsn", "", "up to and including this LSN (e.g. 0/3000060)")
	f.Uint32Var(&tf.xid, "xid", 0, "up to and including this transaction id's commit")
	f.StringVar(&tf.name, "name", "", "up to this named restore point (pg_create_restore_point)")
	f.BoolVar(&tf.consistent, "consistent", false, "the restore point and only the WAL it needs to be consistent")
	f.BoolVar(&tf.exclusive, "exclusive", false, "stop just before the --time, --lsn or --xid target instead of after it")
	f.StringVar(restorePoint, "restore-point", "", "start from this restore point (default: the newest before the target)")
}

func (tf *targetFlags) target(cmd *cobra.Command) (walbackup.Target, error) {
	return restoreTarget(tf.at, tf.lsn, tf.xid, tf.name, tf.consistent, tf.exclusive, cmd)
}

// restoreTarget reads the one target flag given (none: the latest).
func restoreTarget(at, lsn string, xid uint32, name string, consistent, exclusive bool, cmd *cobra.Command) (walbackup.Target, error) {
	var set []string
	for _, f := range []string{"time", "lsn", "xid", "name", "consistent"} {
		if cmd.Flags().Changed(f) {
			set = append(set, "--"+f)
		}
	}
	if len(set) > 1 {
		return walbackup.Target{}, usageErrorf("%s exclude each other: give one target", strings.Join(set, " and "))
	}
	var t walbackup.Target
	switch {
	case cmd.Flags().Changed("time"):
		tm, err := parseTime(at)
		if err != nil {
			return t, err
		}
		t = walbackup.ToTime(tm)
	case cmd.Flags().Changed("lsn"):
		l, err := wal.ParseLSN(lsn)
		if err != nil {
			return t, usageErrorf("--lsn %q: write it as PostgreSQL does, e.g. 0/3000060", lsn)
		}
		t = walbackup.ToLSN(l)
	case cmd.Flags().Changed("xid"):
		t = walbackup.ToXID(xid)
	case cmd.Flags().Changed("name"):
		if name == "" {
			return t, usageErrorf("--name: give the restore point's name")
		}
		t = walbackup.ToName(name)
	case consistent:
		t = walbackup.Consistent()
	default:
		t = walbackup.Latest()
	}
	if exclusive {
		if !cmd.Flags().Changed("time") && !cmd.Flags().Changed("lsn") && !cmd.Flags().Changed("xid") {
			return t, usageErrorf("--exclusive applies to --time, --lsn and --xid only")
		}
		t = t.Exclusive()
	}
	return t, nil
}

// parseTime reads RFC 3339, or PostgreSQL's own "2026-12-07 09:30:00.123+00".
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usageErrorf("--time %q: write RFC 3339 with a zone, e.g. 2026-12-07T09:30:00.123456Z or 2026-12-07T10:30:00+01:00", s)
}

// planError adds what to do to the errors of planning.
func planError(err error) error {
	switch {
	case errors.Is(err, walbackup.ErrOutsideInterval):
		return fmt.Errorf("%w; `pglogship info` shows the restorable interval", err)
	case errors.Is(err, walbackup.ErrNoRestorePoint):
		return fmt.Errorf("%w; a parent session must take one first (`pglogship info` lists them)", err)
	}
	return err
}

func newDrillCmd(g *globals) *cobra.Command {
	var pick pickFlags
	var srv serverFlags
	var restorePoint, scratch string
	var sqls []string
	cmd := &cobra.Command{
		Use:   "drill --scratch DIR",
		Short: "Prove a restore point: restore it into a scratch directory, start it, check it, remove it (exit code 5 if it fails)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if scratch == "" {
				return usageErrorf("--scratch DIR is required: a new directory for the drill's copy (removed afterwards)")
			}
			e, b, to, prog, err := g.openScratch(ctx, "drill", &pick, &srv, scratch)
			if err != nil {
				return err
			}
			defer e.Close()
			res, err := b.job.Drill(ctx, walbackup.DrillRequest{Machine: to.Guest.ID, SystemID: pick.systemID, DataDir: pick.dataDir,
				RestorePoint: restorePoint, Scratch: to, SQL: sqls})
			prog.finish()
			if err != nil {
				return planError(err)
			}
			if g.json {
				if err := printJSON(g.stdout, res); err != nil {
					return err
				}
			} else {
				verdict := "PASSED"
				if !res.Passed {
					verdict = "FAILED"
				}
				fmt.Fprintf(g.stdout, "drill of restore point %s %s: timeline %d at %s, databases %s, took %s\n", res.RestorePoint, verdict,
					res.Timeline, res.LSN, strings.Join(res.Databases, ", "), res.Took.Round(time.Millisecond))
				for _, f := range res.Failures {
					fmt.Fprintf(g.stdout, "  %s\n", f)
				}
			}
			if !res.Passed {
				return &problemsError{"the restore drill failed"}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&scratch, "scratch", "", "a new directory for the drill's copy; removed afterwards")
	cmd.Flags().StringVar(&restorePoint, "restore-point", "", "the restore point to prove (default: the newest)")
	cmd.Flags().StringArrayVar(&sqls, "sql", nil, "a statement that must succeed in the restored instance (repeatable)")
	pick.add(cmd)
	srv.add(cmd)
	jsonFlag(cmd, g)
	return cmd
}

// openScratch opens the machine pick names and says where a scratch
// server (a drill's, an export's) goes: into dir, started there as srv
// says, on a free port when srv names none. what names the command, which
// a QEMU job refuses (builtJob.startsServer).
func (g *globals) openScratch(ctx context.Context, what string, pick *pickFlags, srv *serverFlags, dir string) (*env, *builtJob, walbackup.RestoreTo, *progress, error) {
	var to walbackup.RestoreTo
	var err error
	if to.Image, err = filepath.Abs(dir); err != nil {
		return nil, nil, to, nil, usageErrorf("--scratch: %v", err)
	}
	if to.Recovery, err = srv.options(); err != nil {
		return nil, nil, to, nil, err
	}
	if to.Recovery.Port == 0 {
		if to.Recovery.Port, err = freePort(); err != nil {
			return nil, nil, to, nil, err
		}
	}
	e, b, m, prog, err := g.openMachine(ctx, pick)
	if err == nil {
		if err = b.startsServer(what); err != nil {
			e.Close()
			return nil, nil, to, nil, err
		}
	}
	to.Guest = m
	return e, b, to, prog, err
}

// freePort asks the kernel for a free port on the loopback.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
