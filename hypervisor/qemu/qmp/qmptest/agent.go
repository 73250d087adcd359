// Package qmptest has an in-process fake QEMU guest agent for tests of code
// that freezes guests, where no real guest runs: it listens on a unix
// socket like the one QEMU binds a guest's org.qemu.guest_agent.0 port to,
// answers guest-sync-delimited and the guest-fsfreeze commands, records
// every command, and can fail or stay silent on demand.
package qmptest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// Agent is a fake guest agent. Create it with NewAgent.
type Agent struct {
	Socket string // unix socket path to give the client

	ln net.Listener
	wg sync.WaitGroup

	mu         sync.Mutex
	frozen     bool
	calls      []string
	freezeFail string
	silent     bool
	stale      []byte
	conns      map[net.Conn]struct{}
}

// NewAgent starts a fake agent on a fresh unix socket; it stops in
// t.Cleanup. The guest starts thawed.
func NewAgent(t testing.TB) *Agent {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "pglogship-qga-")
	if err != nil {
		t.Fatalf("qmptest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &Agent{Socket: filepath.Join(dir, "qga.sock"), conns: map[net.Conn]struct{}{}}
	a.ln, err = net.Listen("unix", a.Socket)
	if err != nil {
		t.Fatalf("qmptest: %v", err)
	}
	a.wg.Add(1)
	go a.accept()
	t.Cleanup(a.close)
	return a
}

// Calls returns the commands received so far, in order.
func (a *Agent) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Frozen reports whether the fake guest's file systems are frozen.
func (a *Agent) Frozen() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.frozen
}

// FailFreeze makes guest-fsfreeze-freeze answer a GenericError with desc
// after freezing (as the real agent may, having frozen some file systems
// before one failed); "" restores success.
func (a *Agent) FailFreeze(desc string) {
	a.mu.Lock()
	a.freezeFail = desc
	a.mu.Unlock()
}

// SetSilent makes the agent read commands but never answer, like a socket
// whose guest runs no agent.
func (a *Agent) SetSilent(silent bool) {
	a.mu.Lock()
	a.silent = silent
	a.mu.Unlock()
}

// SetStale sets bytes sent to every new client before anything else, like
// responses an earlier client left unread.
func (a *Agent) SetStale(b []byte) {
	a.mu.Lock()
	a.stale = bytes.Clone(b)
	a.mu.Unlock()
}

func (a *Agent) close() {
	a.ln.Close()
	a.mu.Lock()
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

func (a *Agent) accept() {
	defer a.wg.Done()
	for {
		c, err := a.ln.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		a.conns[c] = struct{}{}
		stale := a.stale
		a.mu.Unlock()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer func() {
				a.mu.Lock()
				delete(a.conns, c)
				a.mu.Unlock()
				c.Close()
			}()
			if len(stale) > 0 {
				if _, err := c.Write(stale); err != nil {
					return
				}
			}
			a.serve(c)
		}()
	}
}

// serve answers one client. The real agent parses a JSON stream; the
// clients under test end each command with a newline, which this fake
// relies on. Leading 0xFF bytes (a parser reset) are skipped.
func (a *Agent) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		line = bytes.TrimLeft(line, "\xff")
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			continue
		}
		out, ok := a.answer(req.Execute, req.Arguments)
		if !ok {
			continue
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func (a *Agent) answer(cmd string, args json.RawMessage) ([]byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, cmd)
	if a.silent {
		return nil, false
	}
	ret := func(v any) []byte {
		b, _ := json.Marshal(map[string]any{"return": v})
		return append(b, '\n')
	}
	fail := func(class, desc string) []byte {
		b, _ := json.Marshal(map[string]any{"error": map[string]string{"class": class, "desc": desc}})
		return append(b, '\n')
	}
	switch cmd {
	case "guest-sync-delimited":
		var p struct {
			ID uint64 `json:"id"`
		}
		_ = json.Unmarshal(args, &p)
		return append([]byte{0xFF}, ret(p.ID)...), true
	case "guest-fsfreeze-freeze":
		if a.frozen {
			return fail("GenericError", "Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state"), true
		}
		a.frozen = true
		if a.freezeFail != "" {
			return fail("GenericError", a.freezeFail), true
		}
		return ret(1), true
	case "guest-fsfreeze-thaw":
		n := 0
		if a.frozen {
			n = 1
		}
		a.frozen = false
		return ret(n), true
	case "guest-fsfreeze-status":
		if a.frozen {
			return ret("frozen"), true
		}
		return ret("thawed"), true
	}
	return fail("CommandNotFound", "The command "+cmd+" has not been found"), true
}
