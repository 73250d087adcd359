package runtime

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
)

// Main runs the runtime component on this process's stdin and stdout and
// returns the exit code. Logs go to stderr, never to stdout, which carries
// the protocol. A host program may call it at start-up when asked to act as
// the runtime, so the deployer can reuse its own executable.
//
// Flags, set by deployers that install the component: -lock FILE holds
// FILE locked while running; -clean BASE removes runtime folders under
// BASE left by runtimes that are gone, in the background, once no deployer
// is installing under BASE (its own included: it holds the install lock
// until this runtime has answered the handshake).
//
// Arguments ending in "fetch SOCKET %f %p" select the fetch mode, which a
// recovery's restore_command runs (see Runtime.Recover and FetchFile): it
// exits 0 with the file at %p, FetchExitNotFound when the archive does not
// have it, and FetchExitFailed on any other error.
// memoryLimit is the runtime's soft memory limit (GOMEMLIMIT overrides it):
// its live memory when it ships is two compressed files, two encoders and
// read buffers, about 30 MiB.
const memoryLimit = 48 << 20

func Main() int {
	fs := flag.NewFlagSet("pglogship-runtime", flag.ContinueOnError)
	lock := fs.String("lock", "", "lock this file while running")
	clean := fs.String("clean", "", "remove stale runtime folders under this folder")
	if err := fs.Parse(flagArgs(os.Args[1:])); err != nil {
		return 2
	}
	if rest := fs.Args(); len(rest) >= 4 && rest[len(rest)-4] == "fetch" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return fetchMain(ctx, rest[len(rest)-3:])
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if os.Getenv("GOMEMLIMIT") == "" {
		// A guest's database server comes first: collect garbage sooner
		// than Go's default would, so shipping stays near its live memory.
		debug.SetMemoryLimit(memoryLimit)
	}
	if *lock != "" {
		if err := HoldLock(*lock); err != nil {
			fmt.Fprintln(os.Stderr, "pglogship-runtime: lock:", err)
			return 1
		}
	}
	if *clean != "" {
		// In the background: it waits for the deployer that started us.
		go func() {
			removed, err := CleanStale(*clean, filepath.Dir(*lock))
			if err != nil {
				logger.Warn("clean stale runtime folders", "err", err)
			}
			for _, d := range removed {
				logger.Info("removed a runtime folder left by a crashed host", "dir", d)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	self, err := selfCommand()
	if err != nil {
		logger.Warn("recovery will not work: cannot find this executable", "err", err)
	}
	err = Serve(ctx, os.Stdin, os.Stdout, func(c ConnConfig) *Runtime {
		return New(Config{Conn: c, Logger: logger, Self: self})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pglogship-runtime:", err)
		return 1
	}
	return 0
}

// flagArgs drops the words before the first flag: a host program that
// reuses its own executable selects the runtime with them (selfCommand),
// and its deployer puts the runtime's flags after them. Fetch mode has no
// flags and keeps every word.
func flagArgs(args []string) []string {
	if i := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "-") }); i > 0 {
		return args[i:]
	}
	return args
}

// selfCommand returns the command that runs this program again as the
// runtime: the executable and the arguments before the first flag (those a
// host program that reuses its own executable selects the runtime with).
func selfCommand() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	self := []string{exe}
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-") {
			break
		}
		self = append(self, a)
	}
	return self, nil
}
