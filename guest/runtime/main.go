package runtime

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Main runs the runtime component on this process's stdin and stdout and
// returns the exit code. Logs go to stderr, never to stdout, which carries
// the protocol. A host program may call it at start-up when asked to act as
// the runtime, so the deployer can reuse its own executable.
//
// Flags, set by deployers that install the component: -lock FILE holds
// FILE locked while running; -clean BASE first removes runtime folders
// under BASE left by runtimes that are gone.
func Main() int {
	fs := flag.NewFlagSet("pglogship-runtime", flag.ContinueOnError)
	lock := fs.String("lock", "", "lock this file while running")
	clean := fs.String("clean", "", "remove stale runtime folders under this folder")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *lock != "" {
		if err := HoldLock(*lock); err != nil {
			fmt.Fprintln(os.Stderr, "pglogship-runtime: lock:", err)
			return 1
		}
	}
	if *clean != "" {
		removed, err := CleanStale(*clean, filepath.Dir(*lock))
		if err != nil {
			logger.Warn("clean stale runtime folders", "err", err)
		}
		for _, d := range removed {
			logger.Info("removed a runtime folder left by a crashed host", "dir", d)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := Serve(ctx, os.Stdin, os.Stdout, func(c ConnConfig) *Runtime {
		return New(Config{Conn: c, Logger: logger})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pglogship-runtime:", err)
		return 1
	}
	return 0
}
