// Command pglogship is the operator's front door to pglogship: it runs the
// jobs of one configuration file as a service (run) and inspects, checks,
// verifies, restores, drills and expires what they keep. It is a thin
// layer over the library's public API; docs/cli.md documents the
// commands, the configuration file, the JSON output and the exit codes.
//
// Run with the argument "runtime" it is the guest runtime component, so
// local guests need no separate binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/walbackup"
)

// runtimeArg makes this executable the guest runtime (local guests).
const runtimeArg = "runtime"

// Exit codes, documented in docs/cli.md.
const (
	exitOK       = 0
	exitFailed   = 1 // the command failed (a server unreachable, a restore that failed)
	exitUsage    = 2 // bad flags or arguments
	exitConfig   = 3 // the configuration file (or environment) cannot be used
	exitRefused  = 4 // refused to overwrite: restore in place without --force, a target that exists
	exitProblems = 5 // check, verify or drill found problems
)

// usageError is a bad flag or argument: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// refusedError: exit code 4.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// problemsError: the command ran and found problems (exit code 5); what
// it found is in its output already.
type problemsError struct{ msg string }

func (e *problemsError) Error() string { return e.msg }

func main() {
	if len(os.Args) > 1 && os.Args[1] == runtimeArg {
		os.Exit(runtime.Main())
	}
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// globals are the flags every command takes.
type globals struct {
	config   string
	json     bool
	logLevel string
	job      string

	stdout, stderr io.Writer
	ran            bool // a command's own code started: errors before are usage errors
	// runtimeBinary is the runtime local guests run, and SSH guests by
	// default; empty: this executable. Tests that build jobs in their own
	// process name the built command.
	runtimeBinary string
}

func execute(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return exitOK
	}
	code := exitFailed
	var ue *usageError
	var ce *configError
	var re *refusedError
	var pe *problemsError
	switch {
	case errors.As(err, &ue) || !g.ran:
		code = exitUsage
		if !strings.Contains(err.Error(), "--help") {
			err = fmt.Errorf("%w (see pglogship --help)", err)
		}
	case errors.As(err, &ce):
		code = exitConfig
	case errors.As(err, &re), errors.Is(err, walbackup.ErrTargetExists):
		code = exitRefused
	case errors.As(err, &pe):
		code = exitProblems
	}
	fmt.Fprintln(stderr, "pglogship:", err)
	return code
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "pglogship",
		Short: "Protect PostgreSQL machines: image restore points and WAL shipped every interval",
		Long: `pglogship runs the backup jobs of one configuration file (run) and inspects,
checks, verifies, restores, drills and expires what they keep.

The configuration file comes from --config or ` + envConfig + `; see docs/cli.md.
Exit codes: 0 ok, 1 failed, 2 bad flags or arguments, 3 bad configuration,
4 refused to overwrite, 5 problems found (check, verify, drill).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.ran = true
			if g.config == "" {
				g.config = os.Getenv(envConfig)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErrorf("%v", err) })
	pf := root.PersistentFlags()
	pf.StringVarP(&g.config, "config", "c", "", "configuration file (default $"+envConfig+")")
	pf.StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (default warn; run: info; $"+envLogLevel+")")
	pf.StringVar(&g.job, "job", "", "the job, by name, when the configuration has several")
	root.AddCommand(newRunCmd(g), newInfoCmd(g), newSessionsCmd(g), newCheckCmd(g), newVerifyCmd(g), newRestoreCmd(g),
		newDrillCmd(g), newExportCmd(g), newPublishCmd(g), newUnpublishCmd(g), newExpireCmd(g))
	return root
}

// jsonFlag adds --json to a read command.
func jsonFlag(cmd *cobra.Command, g *globals) {
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON (schema in docs/cli.md) instead of a table")
}

// setup loads the configuration and makes the logger; defaultLevel is the
// command's own default.
func (g *globals) setup(defaultLevel slog.Level) (*env, error) {
	cfg, err := loadConfig(g.config)
	if err != nil {
		return nil, err
	}
	level := defaultLevel
	name := cfg.Log.Level
	if g.logLevel != "" {
		name = g.logLevel
	}
	if name != "" {
		if err := level.UnmarshalText([]byte(name)); err != nil {
			return nil, configErrorf("log level %q: use debug, info, warn or error", name)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch cfg.Log.Format {
	case "", "text":
		h = slog.NewTextHandler(g.stderr, opts)
	case "json":
		h = slog.NewJSONHandler(g.stderr, opts)
	default:
		return nil, configErrorf("%s: [log] format %q: use text or json", cfg.path, cfg.Log.Format)
	}
	return &env{cfg: cfg, logger: slog.New(h), clk: clock.New(), runtimeBinary: g.runtimeBinary}, nil
}

// open is setup, the store, the repository and the jobs, whose events go
// to observe and progress (either may be nil).
func (g *globals) open(ctx context.Context, defaultLevel slog.Level, observe, progress func(string, walbackup.Event)) (*env, error) {
	e, err := g.setup(defaultLevel)
	if err != nil {
		return nil, err
	}
	e.observe, e.progress = observe, progress
	if err := e.openStore(ctx); err != nil {
		return nil, err
	}
	if err := e.openRepository(ctx); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.buildJobs(); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// selected returns the job --job names, or the only one.
func (g *globals) selected(e *env) (*builtJob, error) {
	jc, err := e.cfg.job(g.job)
	if err != nil {
		return nil, err
	}
	for _, b := range e.jobs {
		if b.cfg == jc {
			return b, nil
		}
	}
	return nil, fmt.Errorf("job %q was not built", jc.Name)
}

// chosen returns the jobs --job names (all without it).
func (g *globals) chosen(e *env) ([]*builtJob, error) {
	if g.job == "" {
		return e.jobs, nil
	}
	b, err := g.selected(e)
	if err != nil {
		return nil, err
	}
	return []*builtJob{b}, nil
}

// onJobs is the RunE of a command over the jobs --job names (all without
// it): it opens what they need, runs fn, and closes it again.
func (g *globals) onJobs(fn func(ctx context.Context, e *env, jobs []*builtJob) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		e, err := g.open(cmd.Context(), slog.LevelWarn, nil, nil)
		if err != nil {
			return err
		}
		defer e.Close()
		jobs, err := g.chosen(e)
		if err != nil {
			return err
		}
		return fn(cmd.Context(), e, jobs)
	}
}

// openMachine opens what a restore or a drill needs, with progress shown,
// and picks the job and machine.
func (g *globals) openMachine(ctx context.Context, pick *pickFlags) (*env, *builtJob, walbackup.Machine, *progress, error) {
	prog := newProgress(g.stdout, g.stderr)
	e, err := g.open(ctx, slog.LevelWarn, nil, prog.observe)
	if err != nil {
		return nil, nil, walbackup.Machine{}, nil, err
	}
	b, err := g.selected(e)
	if err == nil {
		var m walbackup.Machine
		if m, err = pick.pick(b); err == nil {
			return e, b, m, prog, nil
		}
	}
	e.Close()
	return nil, nil, walbackup.Machine{}, nil, err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
