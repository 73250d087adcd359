package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
)

// checkJSON is one check's result (docs/cli.md).
type checkJSON struct {
	Check  string `json:"check"`  // store, repository, guest
	Target string `json:"target"` // what was checked
	OK     bool   `json:"ok"`
	Detail string `json:"detail"` // what was found, or what to fix
}

func newCheckCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the session store, that the repository is reachable and writable, and each guest's PostgreSQL requirements",
		Long: `check connects to the session store, writes, reads back and removes a probe
object in the repository, and deploys the runtime into every machine of
every job (or of --job) to check PostgreSQL's requirements: release 13 or
later, wal_level replica or logical, archive_mode on, archive_command empty
or already pglogship's. It changes nothing. Exit code 5 when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			e, err := g.setup(slog.LevelWarn)
			if err != nil {
				return err
			}
			defer e.Close()
			if g.job != "" {
				if _, err := e.cfg.job(g.job); err != nil {
					return err
				}
			}
			var out []checkJSON
			add := func(c, target string, err error, okDetail string) {
				r := checkJSON{Check: c, Target: target, OK: err == nil, Detail: okDetail}
				if err != nil {
					r.Detail = err.Error()
				}
				out = append(out, r)
			}
			storeErr := e.openStore(ctx)
			if storeErr == nil {
				_, storeErr = e.store.List(ctx, session.Query{Job: "pglogship check", Limit: 1})
			}
			add("store", storeShown(e.cfg), storeErr, "connected, schema up to date, sessions readable")
			var ce *configError
			if errors.As(storeErr, &ce) {
				return storeErr // nothing to connect with: fix the file first
			}

			repoErr := e.openRepository(ctx)
			if repoErr == nil {
				host, _ := os.Hostname()
				repoErr = repository.Probe(ctx, e.repo, e.clk.Now(), fmt.Sprintf("%s-%d", safeTag(host), os.Getpid()))
			}
			add("repository", repoShown(e.cfg.Repository), repoErr, "reachable; a probe object was written, read back and removed")

			for i := range e.cfg.Jobs {
				jc := &e.cfg.Jobs[i]
				if g.job != "" && jc.Name != g.job {
					continue
				}
				d, err := e.deployer(jc)
				if err != nil {
					return err
				}
				for _, m := range jc.Machines {
					dirs := m.Instances
					if len(dirs) == 0 {
						dirs = []string{""}
					}
					for _, dir := range dirs {
						target := fmt.Sprintf("job %q machine %s", jc.Name, m.ID)
						if dir != "" {
							target += " instance " + dir
						}
						detail, err := checkGuest(ctx, d, guest.Target{Machine: m.ID, Address: m.Address, DataDir: dir})
						add("guest", target, err, detail)
					}
				}
			}
			if g.json {
				if err := printJSON(g.stdout, out); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CHECK\tTARGET\tRESULT\tDETAIL")
				for _, r := range out {
					res := "ok"
					if !r.OK {
						res = "FAILED"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, r.Target, res, r.Detail)
				}
				tw.Flush()
			}
			failed := 0
			for _, r := range out {
				if !r.OK {
					failed++
				}
			}
			if failed > 0 {
				return &problemsError{fmt.Sprintf("%d of %d checks failed", failed, len(out))}
			}
			return nil
		},
	}
	jsonFlag(cmd, g)
	return cmd
}

// checkGuest deploys the runtime, scans the instance and checks the
// requirements; the runtime is closed (uninstalled) again.
func checkGuest(ctx context.Context, d guest.Deployer, t guest.Target) (string, error) {
	rt, err := d.Deploy(ctx, t)
	if err != nil {
		return "", fmt.Errorf("deploy the runtime: %w", err)
	}
	defer rt.Close(context.WithoutCancel(ctx))
	inst, err := rt.Scan(ctx)
	if err != nil {
		return "", fmt.Errorf("scan PostgreSQL: %w", err)
	}
	if err := guest.CheckRequirements(inst, runtime.IsOurs); err != nil {
		return "", fmt.Errorf("%w; change it in postgresql.conf and restart or reload PostgreSQL", err)
	}
	return fmt.Sprintf("PostgreSQL %d.%d, system id %d, data directory %s, wal_level %s, archive_mode %s",
		inst.Version/10000, inst.Version%10000, inst.SystemID, inst.DataDir, inst.WALLevel, inst.ArchiveMode), nil
}

// safeTag keeps the letters, digits, dots and dashes of s, for an object
// name.
func safeTag(s string) string {
	b := []byte(s)
	out := b[:0]
	for _, c := range b {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "host"
	}
	return string(out)
}
