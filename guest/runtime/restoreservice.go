package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/pglogship/pglogship/guest"
)

// RestoreServiceConfig configures ServeRestore.
type RestoreServiceConfig struct {
	// Dir is the folder the spool goes into, best on the file system of
	// the server's pg_wal so a fetched file is renamed into place, not
	// copied. Required.
	Dir string
	// OSUser is whom PostgreSQL, and so restore_command, runs as; empty:
	// the runtime's own user. Only root can serve another user.
	OSUser string
	// Fetch gets a WAL file from the archive. Required.
	Fetch guest.FetchFunc
	// Prefetch is how many segments are fetched ahead of the one asked
	// for; 0 means guest.DefaultPrefetch, negative none.
	Prefetch int
	// Self is the command that runs this program (see Config.Self); empty:
	// the running executable.
	Self   []string
	Logger *slog.Logger
}

// RestoreService answers restore_command for a PostgreSQL server that is
// started by someone else (a standby, a recovery run by hand), the way
// Recover does for its own: each call takes a verified file from the spool,
// and the segments after it are fetched meanwhile.
type RestoreService struct {
	command string
	spool   *spool
	srv     *fetchServer
	cancel  context.CancelFunc
	cleanup func()
}

// ServeRestore starts a RestoreService; Close stops it and removes its
// spool.
func ServeRestore(cfg RestoreServiceConfig) (*RestoreService, error) {
	if cfg.Fetch == nil {
		return nil, errors.New("restore service: no Fetch")
	}
	if err := checkGuestPath("spool folder", cfg.Dir); err != nil {
		return nil, err
	}
	owner, err := serverUser(cfg.OSUser, cfg.Dir)
	if err != nil && cfg.OSUser == "" {
		// The folder's owner may be root; the runtime's own user serves.
		owner, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return startRestoreService(context.Background(), cfg.Dir, owner, cfg.Self, cfg.Fetch, prefetchOf(cfg.Prefetch), cfg.Logger)
}

// prefetchOf reads a Prefetch setting: 0 is guest.DefaultPrefetch,
// negative none.
func prefetchOf(n int) int {
	if n == 0 {
		return guest.DefaultPrefetch
	}
	return max(n, 0)
}

// startRestoreService makes a private spool folder in dir (and a socket
// folder in the system's temporary folder when the socket's path would be
// too long), listens on its socket and answers restore_command from it;
// fetches run under ctx until Close.
func startRestoreService(ctx context.Context, dir string, owner *osUser, self []string, fetch guest.FetchFunc,
	prefetch int, logger *slog.Logger) (*RestoreService, error) {
	spoolDir, err := os.MkdirTemp(dir, ".pglogship-spool-")
	if err != nil {
		return nil, fmt.Errorf("spool folder: %w", err)
	}
	dirs := []string{spoolDir}
	cleanup := func() {
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	fail := func(err error) (*RestoreService, error) {
		cleanup()
		return nil, err
	}
	// The folders are handed to the server user last: until then they
	// are root's (0700), and nothing in them can be swapped for a link.
	sock := filepath.Join(spoolDir, "fetch.sock")
	if len(sock) > maxSocketPath {
		sockDir, err := os.MkdirTemp("", "pglogship-fetch-")
		if err != nil {
			return fail(fmt.Errorf("socket folder: %w", err))
		}
		dirs = append(dirs, sockDir)
		sock = filepath.Join(sockDir, "s")
	}
	spool, err := openDir("spool folder", spoolDir)
	if err != nil {
		return fail(err)
	}
	command, err := restoreCommand(self, owner, spool, sock)
	spool.Close()
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fail(fmt.Errorf("listen for restore_command: %w", err))
	}
	if owner != nil {
		if err := os.Lchown(sock, owner.uid, owner.gid); err != nil {
			ln.Close()
			return fail(err)
		}
	}
	for _, d := range dirs {
		if err := makePrivate(d, owner); err != nil {
			ln.Close()
			return fail(err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	sp := newSpool(spoolDir, owner, fetch, prefetch)
	return &RestoreService{
		command: command, spool: sp, srv: serveFetches(ctx, ln, sp, logger),
		cancel: cancel, cleanup: cleanup,
	}, nil
}

// Command is the restore_command to configure the server with.
func (s *RestoreService) Command() string { return s.command }

// Stats counts what was asked for and fetched so far.
func (s *RestoreService) Stats() guest.RecoveryResult {
	st := s.spool.Stats()
	return guest.RecoveryResult{Fetched: st.Fetched, Requests: st.Requests, FromSpool: st.FromSpool,
		Waited: st.Waited, InFlight: st.InFlight}
}

// Close stops answering, cancels the fetches under way and removes the
// spool with what it still holds.
func (s *RestoreService) Close() {
	s.spool.Close() // first, so no answer waits on a fetch
	s.srv.Close()
	s.cancel()
	s.cleanup()
}
