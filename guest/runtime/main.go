package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main runs the runtime component on this process's stdin and stdout and
// returns the exit code. Logs go to stderr, never to stdout, which carries
// the protocol. A host program may call it at start-up when asked to act as
// the runtime, so the deployer can reuse its own executable.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := Serve(ctx, os.Stdin, os.Stdout, func(c ConnConfig) *Runtime {
		return New(Config{Conn: c, Logger: logger})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pglogship-runtime:", err)
		return 1
	}
	return 0
}
