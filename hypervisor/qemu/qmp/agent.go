package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Guest file system freeze states (guest-fsfreeze-status).
const (
	FreezeStatusThawed = "thawed"
	FreezeStatusFrozen = "frozen"
)

// syncSentinel is the byte the guest agent puts before its answer to
// guest-sync-delimited, and that resets its parser when a client sends it.
const syncSentinel = 0xFF

// maxStaleResponses bounds how many leftover responses of an earlier
// client DialAgent skips while looking for its own sync response.
const maxStaleResponses = 16

// Agent is a connection to the QEMU guest agent (qemu-ga) running in a
// guest, through the unix socket that QEMU binds the guest's
// org.qemu.guest_agent.0 virtio-serial port to. The agent answers one
// command at a time, so calls are serialised; Agent is safe for concurrent
// use. A call cut off by its ctx leaves the stream out of step, so it
// closes the connection: later calls return ErrClosed.
type Agent struct {
	conn net.Conn
	br   *bufio.Reader

	mu  sync.Mutex
	dec *decoder
	err error // set once the connection is unusable
}

// DialAgent connects to the guest agent's socket and synchronises with
// guest-sync-delimited, discarding anything an earlier client left
// unread. The agent only answers when it runs in the guest: bound the wait
// with ctx.
func DialAgent(ctx context.Context, path string) (*Agent, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("guest agent dial: %w", err)
	}
	a := &Agent{conn: conn, br: bufio.NewReader(conn)}
	if err := a.sync(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("guest agent %s: %w", path, err)
	}
	return a, nil
}

func (a *Agent) sync(ctx context.Context) error {
	const command = "guest-sync-delimited"
	id := rand.Uint32() // a fresh id cannot match a stale response
	return bounded(ctx, a.conn.SetDeadline, func() error {
		req, err := json.Marshal(map[string]any{"execute": command, "arguments": map[string]uint32{"id": id}})
		if err != nil {
			return err
		}
		if _, err := a.conn.Write(append(append([]byte{syncSentinel}, req...), '\n')); err != nil {
			return fmt.Errorf("%s: %w", command, err)
		}
		if err := a.awaitSync(id); err != nil {
			return fmt.Errorf("%s: %w", command, err)
		}
		a.dec = newDecoder(a.br)
		return nil
	})
}

// awaitSync reads until the answer to guest-sync-delimited with id: a
// sentinel byte followed by {"return": id}. Whatever comes before it (an
// earlier client's unread answers, a half message, their sentinels) is
// skipped.
func (a *Agent) awaitSync(id uint32) error {
	var buf []byte
	synced := false // a sentinel was seen; buf holds what followed it
	stale := 0
	for n := 0; n < MaxMessageSize; n++ {
		b, err := a.br.ReadByte()
		if err != nil {
			return err
		}
		switch {
		case b == syncSentinel:
			synced, buf = true, buf[:0]
			continue
		case !synced:
			continue
		}
		buf = append(buf, b)
		if (b != '}' && b != '\n') || !json.Valid(buf) {
			continue
		}
		m, err := parseMessage(buf)
		if err == nil && m.kind == kindError {
			return decodeResponse("guest-sync-delimited", m, nil)
		}
		var got uint32
		if err == nil && m.kind == kindReturn && json.Unmarshal(m.Return, &got) == nil && got == id {
			return nil // a newline may follow: JSON white space
		}
		if stale++; stale > maxStaleResponses {
			return fmt.Errorf("%w: no response with id %d", ErrProtocol, id)
		}
		synced, buf = false, buf[:0]
	}
	return ErrMessageTooLarge
}

// Execute runs a guest agent command with args (nil for none) and decodes
// its return value into result unless result is nil. A refusal is an
// *Error with the agent's class and description.
func (a *Agent) Execute(ctx context.Context, command string, args, result any) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return fmt.Errorf("%s: %w", command, a.err)
	}
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{command, args}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode arguments: %w", command, err)
	}
	var m *message
	err = bounded(ctx, a.conn.SetDeadline, func() error {
		if _, err := a.conn.Write(append(b, '\n')); err != nil {
			return err
		}
		m, err = a.dec.next()
		return err
	})
	if err != nil {
		a.err = fmt.Errorf("%w: %v", ErrClosed, err)
		a.conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w", command, err)
	}
	return decodeResponse(command, m, result)
}

// FreezeFilesystems freezes the guest's file systems
// (guest-fsfreeze-freeze) and returns how many it froze. Every freeze must
// be followed by ThawFilesystems, also after errors: the agent may have
// frozen some before it failed.
func (a *Agent) FreezeFilesystems(ctx context.Context) (int, error) {
	var n int
	err := a.Execute(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// ThawFilesystems thaws the guest's file systems (guest-fsfreeze-thaw) and
// returns how many it thawed. Thawing a thawed guest is not an error.
func (a *Agent) ThawFilesystems(ctx context.Context) (int, error) {
	var n int
	err := a.Execute(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// FreezeStatus returns FreezeStatusThawed or FreezeStatusFrozen
// (guest-fsfreeze-status).
func (a *Agent) FreezeStatus(ctx context.Context) (string, error) {
	var s string
	err := a.Execute(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// Close closes the connection. Idempotent.
func (a *Agent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = ErrClosed
	}
	a.conn.Close()
	return nil
}
