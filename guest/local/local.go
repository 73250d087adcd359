// Package local is a guest.Deployer for PostgreSQL on this same host (the
// embedded default): it runs the runtime component as a child process and
// talks to it over its pipes. Closing the runtime ends the process; nothing
// is installed, so nothing is left behind.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/remote"
	"github.com/pglogship/pglogship/guest/runtime"
)

var _ guest.Deployer = (*Deployer)(nil)

// Config configures a Deployer.
type Config struct {
	// Binary is the runtime component (cmd/pglogship-runtime); required.
	Binary string
	// Args are passed to Binary, for host programs that reuse their own
	// executable and select the runtime with an argument.
	Args []string
	// Conn says how the runtime reaches PostgreSQL. It is sent over the
	// pipe, never on the command line.
	Conn runtime.ConnConfig
	// Logger receives the runtime's stderr lines; nil means slog.Default().
	Logger *slog.Logger
}

// Deployer starts runtimes as child processes.
type Deployer struct {
	cfg Config
}

// New checks cfg and returns a Deployer.
func New(cfg Config) (*Deployer, error) {
	if cfg.Binary == "" {
		return nil, errors.New("local deployer: runtime binary is required")
	}
	if st, err := os.Stat(cfg.Binary); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("local deployer: runtime binary %s is not an executable file", cfg.Binary)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Deployer{cfg: cfg}, nil
}

// Deploy implements guest.Deployer.
func (d *Deployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	cmd := exec.Command(d.cfg.Binary, d.cfg.Args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("deploy runtime on %s: %w", t.Machine, err)
	}
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		remote.LogLines(stderr, d.cfg.Logger.With("machine", t.Machine, "component", "runtime"))
	}()
	var once sync.Once
	var stopErr error
	stop := func(ctx context.Context) error {
		once.Do(func() {
			stdin.Close() // the runtime ends at EOF
			exited := make(chan error, 1)
			go func() { <-logDone; exited <- cmd.Wait() }()
			select {
			case stopErr = <-exited:
			case <-ctx.Done():
				_ = cmd.Process.Kill()
				stopErr = <-exited
			}
			var ee *exec.ExitError
			if errors.As(stopErr, &ee) && !ee.Exited() {
				stopErr = nil // killed on purpose
			}
		})
		return stopErr
	}
	rt, err := remote.Open(ctx, stdout, stdin, stop, runtime.InitArgs{Conn: d.cfg.Conn, DataDir: t.DataDir})
	if err != nil {
		return nil, fmt.Errorf("deploy runtime on %s: %w", t.Machine, err)
	}
	return rt, nil
}
