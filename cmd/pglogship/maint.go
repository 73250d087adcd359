package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/walbackup"
)

// verifyJSON is what verify prints with --json (docs/cli.md).
type verifyJSON struct {
	Job           string        `json:"job"`
	OK            bool          `json:"ok"`
	Instances     int           `json:"instances"`
	RestorePoints int           `json:"restore_points"`
	Bundles       int           `json:"bundles"`
	WALFiles      int           `json:"wal_files"`
	Bytes         int64         `json:"bytes"`
	Problems      []problemJSON `json:"problems"`
}

type problemJSON struct {
	Kind     string `json:"kind"` // corrupt, manifest, gap, conflict
	Machine  string `json:"machine,omitempty"`
	SystemID string `json:"system_id,omitempty"`
	Object   string `json:"object,omitempty"`
	Segment  string `json:"segment,omitempty"`
	Detail   string `json:"detail"`
}

func newVerifyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and check everything the repository holds for the jobs (exit code 5 on problems)",
		Long: `verify reads every object of each job (or of --job): every image object
against its manifest, every WAL file in every bundle, every restore point's
image chain, that no WAL file is stored with two contents, and that the WAL
of every timeline is continuous. Exit code 5 when it finds a problem.`,
		Args: cobra.NoArgs,
		RunE: g.onJobs(func(ctx context.Context, _ *env, jobs []*builtJob) error {
			var out []verifyJSON
			problems := 0
			for _, b := range jobs {
				rep, err := b.job.Verify(ctx)
				if err != nil {
					return fmt.Errorf("verify job %q: %w", b.cfg.Name, err)
				}
				v := verifyJSON{Job: b.cfg.Name, OK: rep.OK(), Instances: rep.Instances, RestorePoints: rep.RestorePoints, Bundles: rep.Bundles,
					WALFiles: rep.WALFiles, Bytes: rep.Bytes, Problems: []problemJSON{}}
				for _, p := range rep.Problems {
					pj := problemJSON{Kind: string(p.Kind), Machine: p.Machine, Object: p.Object, Segment: p.Segment, Detail: p.Detail}
					if p.SystemID != 0 {
						pj.SystemID = strconv.FormatUint(p.SystemID, 10)
					}
					v.Problems = append(v.Problems, pj)
				}
				problems += len(rep.Problems)
				out = append(out, v)
			}
			if g.json {
				if err := printJSON(g.stdout, out); err != nil {
					return err
				}
			} else {
				for _, v := range out {
					res := "ok"
					if !v.OK {
						res = fmt.Sprintf("%d PROBLEMS", len(v.Problems))
					}
					fmt.Fprintf(g.stdout, "job %q: %s: %d instances, %d restore points, %d bundles, %d WAL files, %s read and checked\n",
						v.Job, res, v.Instances, v.RestorePoints, v.Bundles, v.WALFiles, bytesShown(v.Bytes))
					for _, p := range v.Problems {
						where := "machine " + p.Machine + " system id " + p.SystemID
						for _, x := range []string{p.Object, p.Segment} {
							if x != "" {
								where += " " + x
							}
						}
						fmt.Fprintf(g.stdout, "  %s: %s: %s\n", p.Kind, where, p.Detail)
					}
				}
			}
			if problems > 0 {
				return &problemsError{fmt.Sprintf("verify found %d problems", problems)}
			}
			return nil
		}),
	}
	jsonFlag(cmd, g)
	return cmd
}

// expireJSON is what expire prints with --json (docs/cli.md).
type expireJSON struct {
	Job           string   `json:"job"`
	DryRun        bool     `json:"dry_run"`
	RestorePoints []string `json:"restore_points"`
	Bundles       []string `json:"bundles"`
	Garbage       []string `json:"garbage"`
	Images        []string `json:"shared_images"`
	Held          []string `json:"held"`
}

func newExpireCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Apply the retention now; with --dry-run, only show what it would remove",
		Long: `expire removes the restore points each job's retention no longer keeps and the
WAL no kept restore point needs, as every parent session does after it ends.
With --dry-run it lists what it would remove and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: g.onJobs(func(ctx context.Context, _ *env, jobs []*builtJob) error {
			var out []expireJSON
			for _, b := range jobs {
				var x walbackup.Expired
				var err error
				if dryRun {
					x, err = b.job.ExpireDryRun(ctx)
				} else {
					x, err = b.job.Expire(ctx)
				}
				if err != nil {
					return fmt.Errorf("expire job %q: %w", b.cfg.Name, err)
				}
				out = append(out, expireJSON{Job: b.cfg.Name, DryRun: dryRun, RestorePoints: nonNil(x.RestorePoints), Bundles: nonNil(x.Bundles),
					Garbage: nonNil(x.Garbage), Images: nonNil(x.Images), Held: nonNil(x.Held)})
			}
			if g.json {
				return printJSON(g.stdout, out)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			for _, x := range out {
				fmt.Fprintf(g.stdout, "job %q: %s %d restore points, %d WAL bundles, %d unfinished restore points; %d held by running restores\n",
					x.Job, verb, len(x.RestorePoints), len(x.Bundles), len(x.Garbage), len(x.Held))
				for _, id := range x.RestorePoints {
					fmt.Fprintf(g.stdout, "  restore point %s\n", id)
				}
				for _, n := range x.Bundles {
					fmt.Fprintf(g.stdout, "  bundle %s\n", n)
				}
				for _, n := range x.Garbage {
					fmt.Fprintf(g.stdout, "  unfinished restore point %s\n", n)
				}
				for _, id := range x.Images {
					fmt.Fprintf(g.stdout, "  shared machine image %s\n", id)
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only show what would be removed")
	jsonFlag(cmd, g)
	return cmd
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
