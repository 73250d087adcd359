package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

// The JSON of info (docs/cli.md). Field names are stable; fields are only
// ever added.
type infoJSON struct {
	Config string    `json:"config"`
	Store  string    `json:"store"` // redacted
	Repo   string    `json:"repository"`
	Jobs   []jobJSON `json:"jobs"`
}

type jobJSON struct {
	Name      string          `json:"name"`
	Child     string          `json:"child"`
	Enabled   bool            `json:"enabled"` // as the session store says
	Interval  string          `json:"interval"`
	Schedule  string          `json:"schedule,omitempty"`
	Retention RetentionConfig `json:"retention"`
	Machines  []machineJSON   `json:"machines"`
	Parent    *sessionJSON    `json:"last_parent_session"`
	ChildLast *sessionJSON    `json:"last_child_session"`
}

type machineJSON struct {
	ID        string         `json:"id"`
	Instances []instanceJSON `json:"instances"`
}

type instanceJSON struct {
	SystemID      string             `json:"system_id"`
	DataDir       string             `json:"data_dir,omitempty"`
	RestorePoints []restorePointJSON `json:"restore_points"`
	Restorable    *intervalJSON      `json:"restorable"` // null when nothing can be restored
	Chain         chainJSON          `json:"chain"`
}

type restorePointJSON struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"` // consistent as of
	Timeline uint32    `json:"timeline"`
	StartLSN string    `json:"start_lsn"`
	StopLSN  string    `json:"stop_lsn"`
	Full     bool      `json:"full"`
	Base     string    `json:"base,omitempty"`
}

type intervalJSON struct {
	Timeline      uint32    `json:"timeline"`
	FromLSN       string    `json:"from_lsn"`
	FromTime      time.Time `json:"from_time"`
	ToLSN         string    `json:"to_lsn"`
	ToTime        time.Time `json:"to_time"`
	RestorePoints int       `json:"restore_points"`
	Unknown       []string  `json:"unknown_wal,omitempty"` // WAL whose summary is unknown
}

type chainJSON struct {
	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`
}

type sessionJSON struct {
	ID           string     `json:"id"`
	Job          string     `json:"job"`
	Kind         string     `json:"kind"`
	State        string     `json:"state"`
	Start        time.Time  `json:"start"`
	End          *time.Time `json:"end"`
	Files        int64      `json:"files"`
	Bytes        int64      `json:"bytes"`
	FirstSegment string     `json:"first_segment,omitempty"`
	LastSegment  string     `json:"last_segment,omitempty"`
	Result       string     `json:"result,omitempty"`
}

func sessionOf(s session.Session) *sessionJSON {
	out := &sessionJSON{ID: s.ID, Job: s.Job, Kind: string(s.Kind), State: string(s.State), Start: s.Start, Files: s.Counters.Files,
		Bytes: s.Counters.Bytes, FirstSegment: s.Counters.FirstSegment, LastSegment: s.Counters.LastSegment, Result: s.Result}
	if !s.End.IsZero() {
		end := s.End
		out.End = &end
	}
	return out
}

func newInfoCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show jobs, instances, restore points, the restorable interval, last sessions and chain health",
		Args:  cobra.NoArgs,
		RunE: g.onJobs(func(ctx context.Context, e *env, jobs []*builtJob) error {
			out, err := gatherInfo(ctx, e, jobs)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(g.stdout, out)
			}
			printInfo(g.stdout, out)
			return nil
		}),
	}
	jsonFlag(cmd, g)
	return cmd
}

func gatherInfo(ctx context.Context, e *env, jobs []*builtJob) (*infoJSON, error) {
	out := &infoJSON{Config: e.cfg.path, Store: storeShown(e.cfg), Repo: repoShown(e.cfg.Repository), Jobs: []jobJSON{}}
	for _, b := range jobs {
		jj := jobJSON{Name: b.job.Name(), Child: b.job.ChildName(), Interval: intervalOf(b.cfg).String(), Schedule: b.cfg.Schedule,
			Retention: b.cfg.Retention, Machines: []machineJSON{}}
		enabled, err := e.store.JobEnabled(ctx, b.job.Name())
		if err != nil {
			return nil, fmt.Errorf("session store: %w", err)
		}
		jj.Enabled = enabled
		for _, k := range []struct {
			name string
			to   **sessionJSON
		}{{b.job.Name(), &jj.Parent}, {b.job.ChildName(), &jj.ChildLast}} {
			p, err := e.store.List(ctx, session.Query{Job: k.name, Limit: 1})
			if err != nil {
				return nil, fmt.Errorf("session store: %w", err)
			}
			if len(p.Sessions) > 0 {
				*k.to = sessionOf(p.Sessions[0])
			}
		}
		for _, m := range b.cfg.Machines {
			mj := machineJSON{ID: m.ID, Instances: []instanceJSON{}}
			insts, err := repository.Instances(ctx, e.repo, b.job.Name(), m.ID)
			if err != nil {
				return nil, fmt.Errorf("repository: %w", err)
			}
			for _, inst := range insts {
				ij, err := instanceInfo(ctx, e, b, inst)
				if err != nil {
					return nil, err
				}
				mj.Instances = append(mj.Instances, ij)
			}
			jj.Machines = append(jj.Machines, mj)
		}
		out.Jobs = append(out.Jobs, jj)
	}
	return out, nil
}

func instanceInfo(ctx context.Context, e *env, b *builtJob, inst repository.Instance) (instanceJSON, error) {
	ij := instanceJSON{SystemID: strconv.FormatUint(inst.SystemID, 10), RestorePoints: []restorePointJSON{}, Chain: chainJSON{OK: true}}
	rps, err := repository.RestorePoints(ctx, e.repo, inst, b.auth)
	if err != nil {
		return ij, fmt.Errorf("repository: restore points of %s/%d: %w", inst.Machine, inst.SystemID, err)
	}
	for _, m := range rps {
		ij.DataDir = m.DataDir
		ij.RestorePoints = append(ij.RestorePoints, restorePointJSON{ID: m.ID, Time: m.StopTime, Timeline: m.Timeline,
			StartLSN: m.StartLSN.String(), StopLSN: m.StopLSN.String(), Full: m.Full, Base: m.Base})
		if _, _, err := walbackup.ImageChain(ctx, e.repo, inst, m.ID, b.auth); err != nil {
			ij.Chain.OK = false
			ij.Chain.Problems = append(ij.Chain.Problems, fmt.Sprintf("restore point %s: %v", m.ID, err))
		}
	}
	iv, err := b.job.Interval(ctx, inst.Machine, inst.SystemID)
	switch {
	case errors.Is(err, walbackup.ErrNoRestorePoint):
		ij.Chain.Problems = append(ij.Chain.Problems, "no restore point: the WAL shipped has no base yet")
	case err != nil:
		ij.Chain.OK = false
		ij.Chain.Problems = append(ij.Chain.Problems, fmt.Sprintf("restorable interval: %v", err))
	default:
		ij.Restorable = &intervalJSON{Timeline: iv.Timeline, FromLSN: iv.Earliest.LSN.String(), FromTime: iv.Earliest.Time,
			ToLSN: iv.Latest.LSN.String(), ToTime: iv.Latest.Time, RestorePoints: iv.RestorePoints}
		for _, u := range iv.Unknown {
			ij.Restorable.Unknown = append(ij.Restorable.Unknown, u.String())
		}
	}
	return ij, nil
}

func intervalOf(jc *JobConfig) time.Duration {
	if jc.Interval.Duration == 0 {
		return walbackup.DefaultLogBackupInterval
	}
	return jc.Interval.Duration
}

// storeShown is where the store's connection string comes from, never
// what it is.
func storeShown(c *Config) string {
	switch {
	case c.Store.DSNFile != "":
		return "postgres, connection string from file " + c.Store.DSNFile + " (REDACTED)"
	case c.Store.DSNEnv != "":
		return "postgres, connection string from $" + c.Store.DSNEnv + " (REDACTED)"
	}
	return "postgres, connection string from $" + envStoreDSN + " (REDACTED)"
}

func repoShown(r RepositoryConfig) string {
	switch r.Type {
	case "fs":
		return "fs " + r.Path
	case "s3":
		return fmt.Sprintf("s3 %s/%s/%s (access key %s, secret key REDACTED)", r.Endpoint, r.Bucket, r.Prefix, r.AccessKey)
	}
	return fmt.Sprintf("sftp %s@%s:%s", r.User, r.Address, r.Path)
}

func printInfo(w io.Writer, in *infoJSON) {
	fmt.Fprintf(w, "configuration  %s\nsession store  %s\nrepository     %s\n", in.Config, in.Store, in.Repo)
	for _, j := range in.Jobs {
		fmt.Fprintf(w, "\njob %q (child %q)\n", j.Name, j.Child)
		sched := j.Schedule
		if sched == "" {
			sched = "none (parent started by hand)"
		}
		fmt.Fprintf(w, "  enabled for run %v, WAL every %s, schedule %s, retention %s\n", j.Enabled, j.Interval, sched, retentionShown(j.Retention))
		fmt.Fprintf(w, "  last parent session: %s\n  last child session:  %s\n", sessionLine(j.Parent), sessionLine(j.ChildLast))
		for _, m := range j.Machines {
			if len(m.Instances) == 0 {
				fmt.Fprintf(w, "  machine %s: nothing in the repository yet\n", m.ID)
			}
			for _, ij := range m.Instances {
				fmt.Fprintf(w, "  machine %s, instance %s %s\n", m.ID, ij.SystemID, ij.DataDir)
				if ij.Restorable != nil {
					r := ij.Restorable
					fmt.Fprintf(w, "    restorable from %s (%s) to %s (%s) on timeline %d\n", timeShown(r.FromTime), r.FromLSN,
						timeShown(r.ToTime), r.ToLSN, r.Timeline)
				}
				health := "ok"
				if !ij.Chain.OK {
					health = "BROKEN"
				}
				fmt.Fprintf(w, "    chain %s", health)
				for _, p := range ij.Chain.Problems {
					fmt.Fprintf(w, "; %s", p)
				}
				fmt.Fprintln(w)
				if len(ij.RestorePoints) == 0 {
					continue
				}
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "    RESTORE POINT\tCONSISTENT AT\tTIMELINE\tSTART LSN\tSTOP LSN\tIMAGE")
				for _, rp := range ij.RestorePoints {
					kind := "full"
					if !rp.Full {
						kind = "incremental on " + rp.Base
					}
					fmt.Fprintf(tw, "    %s\t%s\t%d\t%s\t%s\t%s\n", rp.ID, timeShown(rp.Time), rp.Timeline, rp.StartLSN, rp.StopLSN, kind)
				}
				tw.Flush()
			}
		}
	}
}

func retentionShown(r RetentionConfig) string {
	switch {
	case r.RestorePoints > 0 && r.WALDays > 0:
		return fmt.Sprintf("%d restore points, WAL %d days", r.RestorePoints, r.WALDays)
	case r.RestorePoints > 0:
		return fmt.Sprintf("%d restore points", r.RestorePoints)
	case r.ImageDays > 0 && r.WALDays > 0:
		return fmt.Sprintf("images %d days, WAL %d days", r.ImageDays, r.WALDays)
	case r.ImageDays > 0:
		return fmt.Sprintf("images %d days", r.ImageDays)
	}
	return "keep everything"
}

func sessionLine(s *sessionJSON) string {
	if s == nil {
		return "none"
	}
	end := "running"
	if s.End != nil {
		end = "ended " + timeShown(*s.End)
	}
	line := fmt.Sprintf("%s %s, started %s, %s, %d files, %s", s.ID, s.State, timeShown(s.Start), end, s.Files, bytesShown(s.Bytes))
	if s.Result != "" {
		line += ": " + s.Result
	}
	return line
}

func timeShown(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000000Z")
}

func bytesShown(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newSessionsCmd(g *globals) *cobra.Command {
	var kind string
	var limit int
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List the sessions of the parent and child jobs and the restores, drills and exports, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "" && !session.Kind(kind).Valid() {
				return usageErrorf("--kind %q: use parent, child or restore", kind)
			}
			if limit <= 0 {
				return usageErrorf("--limit %d: give a positive number", limit)
			}
			e, err := g.setup(slog.LevelWarn)
			if err != nil {
				return err
			}
			defer e.Close()
			if err := e.openStore(cmd.Context()); err != nil {
				return err
			}
			out := []*sessionJSON{}
			for _, jc := range e.cfg.Jobs {
				if g.job != "" && jc.Name != g.job {
					continue
				}
				for _, name := range []string{jc.Name, walbackup.ChildJobName(jc.Name), walbackup.RestoreJobName(jc.Name)} {
					p, err := e.store.List(cmd.Context(), session.Query{Job: name, Kind: session.Kind(kind), Limit: limit})
					if err != nil {
						return fmt.Errorf("session store: %w", err)
					}
					for _, s := range p.Sessions {
						out = append(out, sessionOf(s))
					}
				}
			}
			if g.job != "" {
				if _, err := e.cfg.job(g.job); err != nil {
					return err
				}
			}
			sortSessions(out)
			if len(out) > limit {
				out = out[:limit]
			}
			if g.json {
				return printJSON(g.stdout, out)
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tJOB\tKIND\tSTATE\tSTART\tEND\tFILES\tBYTES\tRESULT")
			for _, s := range out {
				end := "-"
				if s.End != nil {
					end = timeShown(*s.End)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Job, s.Kind, s.State, timeShown(s.Start), end, s.Files,
					bytesShown(s.Bytes), s.Result)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "parent, child or restore (restores, drills and exports; default all)")
	cmd.Flags().IntVar(&limit, "limit", 20, "at most this many sessions")
	jsonFlag(cmd, g)
	return cmd
}

// sortSessions orders sessions newest first, as the store does per job.
func sortSessions(s []*sessionJSON) {
	slices.SortStableFunc(s, func(a, b *sessionJSON) int { return b.Start.Compare(a.Start) })
}
