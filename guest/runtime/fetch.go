package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/wal"
)

// Exit codes of the fetch mode (restore_command). PostgreSQL takes any exit
// status up to 125 for "the archive has no such file" and ends recovery
// there, so a failure must exit above 125, which stops the server instead
// of letting it promote at the wrong place.
const (
	FetchExitNotFound = 1
	FetchExitFailed   = 200
)

// fetchRequest is what the fetch command sends on the socket: one JSON
// line.
type fetchRequest struct {
	Name string `json:"name"`
}

// fetchReply answers it: the path of a verified copy in the spool, to be
// renamed into place; or None; or Error.
type fetchReply struct {
	Path  string `json:"path,omitempty"`
	None  bool   `json:"none,omitempty"`
	Error string `json:"error,omitempty"`
}

// maxFetchLine bounds a request or reply line.
const maxFetchLine = 64 << 10

// fetchServer answers restore_command's fetch requests on a unix socket
// from a spool.
type fetchServer struct {
	ln     net.Listener
	spool  *spool
	logger *slog.Logger
	wg     sync.WaitGroup
}

// serveFetches accepts connections on ln until Close, answering each from
// sp; the spool's fetches run under ctx.
func serveFetches(ctx context.Context, ln net.Listener, sp *spool, logger *slog.Logger) *fetchServer {
	s := &fetchServer{ln: ln, spool: sp, logger: logger}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				s.answer(ctx, conn)
			}()
		}
	}()
	return s
}

func (s *fetchServer) answer(ctx context.Context, conn net.Conn) {
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxFetchLine), 4096).ReadBytes('\n')
	var req fetchRequest
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	var reply fetchReply
	if err == nil {
		if _, err = wal.ParseFileName(req.Name); err == nil {
			reply.Path, err = s.spool.Get(ctx, req.Name)
		}
	}
	switch {
	case errors.Is(err, guest.ErrNoSuchWAL):
		reply.None = true
	case err != nil:
		reply.Error = err.Error()
		s.logger.Warn("restore_command failed", "segment", req.Name, "err", err)
	}
	b, _ := json.Marshal(reply) // strings and a bool always encode
	if _, err := conn.Write(append(b, '\n')); err != nil && reply.Path != "" {
		os.Remove(reply.Path) // nobody will take it
	}
}

// Close stops accepting, closing the listener, and waits for the answers
// under way; close the spool first so none waits on a fetch.
func (s *fetchServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// FetchFile is the fetch mode's work: it asks the runtime listening on
// socket for the WAL file name and puts it at dst (restore_command's %p,
// relative to the working directory, the data directory), renaming the
// runtime's verified copy into place, or copying it through a temporary
// file in dst's folder when they are on different file systems. A file the
// archive does not hold gives an error matching guest.ErrNoSuchWAL.
func FetchFile(ctx context.Context, socket, name, dst string) error {
	if _, err := wal.ParseFileName(name); err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("reach the runtime: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	b, _ := json.Marshal(fetchRequest{Name: name})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("ask the runtime for %s: %w", name, err)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxFetchLine), 4096).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("ask the runtime for %s: no answer: %w", name, err)
	}
	var reply fetchReply
	if err := json.Unmarshal(line, &reply); err != nil {
		return fmt.Errorf("ask the runtime for %s: %w", name, err)
	}
	switch {
	case reply.None:
		return fmt.Errorf("%s: %w", name, guest.ErrNoSuchWAL)
	case reply.Error != "":
		return fmt.Errorf("fetch %s: %s", name, reply.Error)
	case reply.Path == "":
		return fmt.Errorf("fetch %s: the runtime answered nothing", name)
	}
	return place(reply.Path, dst)
}

// place moves src to dst, through a copy when a rename cannot.
func place(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	defer os.Remove(src)
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return replaceFile(dst, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}

// fetchMain runs the fetch mode: args are the socket, %f and %p.
func fetchMain(ctx context.Context, args []string) int {
	err := FetchFile(ctx, args[0], args[1], args[2])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, guest.ErrNoSuchWAL):
		return FetchExitNotFound
	}
	fmt.Fprintln(os.Stderr, "pglogship-runtime fetch:", err)
	return FetchExitFailed
}
