package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// EventBuffer is how many events a subscription holds for a reader that
// falls behind; later ones are dropped (Subscription.Dropped counts them).
const EventBuffer = 256

// past is a deadline that has expired: setting it unblocks pending I/O.
var past = time.Unix(1, 0)

// Client is a connection to a QEMU monitor (QMP). It is safe for
// concurrent use: calls are matched to their responses by id, and events
// go to every subscription.
type Client struct {
	conn    net.Conn
	version Version

	wmu sync.Mutex // serialises writes to conn

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan *message
	subs    map[*Subscription]struct{}
	err     error         // why the connection ended; set before done closes
	done    chan struct{} // closed when the reader has stopped
}

// Dial connects to the QMP unix socket at path, reads QEMU's greeting and
// negotiates capabilities (qmp_capabilities). ctx bounds the handshake
// only. QEMU serves one client per monitor socket: while another client
// is connected, Dial waits (until ctx ends).
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp dial: %w", err)
	}
	c, err := newClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return c, nil
}

// newClient runs the handshake on conn and starts reading.
func newClient(ctx context.Context, conn net.Conn) (*Client, error) {
	dec := newDecoder(conn)
	var ver Version
	err := bounded(ctx, conn.SetDeadline, func() (err error) {
		ver, err = handshake(conn, dec)
		return err
	})
	if err != nil {
		return nil, err
	}
	c := &Client{
		conn:    conn,
		version: ver,
		nextID:  1,
		pending: map[string]chan *message{},
		subs:    map[*Subscription]struct{}{},
		done:    make(chan struct{}),
	}
	go c.read(dec)
	return c, nil
}

// maxEarlyEvents bounds the events handshake skips before the greeting.
const maxEarlyEvents = 64

func handshake(conn net.Conn, dec *decoder) (Version, error) {
	m, err := dec.next()
	// An event QEMU emitted as the previous client left can reach the new
	// one ahead of its greeting (seen under load, as a block job ended):
	// nothing of this connection's, so it is skipped.
	for skipped := 0; err == nil && m.kind == kindEvent && skipped < maxEarlyEvents; skipped++ {
		m, err = dec.next()
	}
	if err != nil {
		return Version{}, fmt.Errorf("read greeting: %w", err)
	}
	if m.kind != kindGreeting {
		what := map[kind]string{kindReturn: "a command's return", kindError: "an error", kindEvent: "event " + m.Event}[m.kind]
		return Version{}, fmt.Errorf("%w: first message is not the greeting but %s", ErrProtocol, what)
	}
	ver := m.version()
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities","id":"0"}` + "\r\n")); err != nil {
		return Version{}, fmt.Errorf("qmp_capabilities: %w", err)
	}
	for {
		m, err := dec.next()
		if err != nil {
			return Version{}, fmt.Errorf("qmp_capabilities: %w", err)
		}
		switch m.kind {
		case kindReturn:
			return ver, nil
		case kindError:
			return Version{}, &Error{Command: "qmp_capabilities", Class: m.Error.Class, Desc: m.Error.Desc}
		}
		// Events cannot come before capabilities are negotiated; ignore.
	}
}

// Version is the QEMU version the greeting announced.
func (c *Client) Version() Version { return c.version }

// Execute runs command with args (nil for none, else marshalled as the
// arguments object) and decodes QEMU's return value into result unless
// result is nil. A refusal by QEMU is an *Error carrying its class and
// description. When ctx ends first, Execute returns ctx.Err() at once;
// QEMU may still run the command, and its late response is dropped.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	m, err := c.call(ctx, command, args)
	if err != nil {
		return err
	}
	return decodeResponse(command, m, result)
}

// HumanMonitorCommand runs an HMP command line (human-monitor-command)
// and returns its output.
func (c *Client) HumanMonitorCommand(ctx context.Context, line string) (string, error) {
	var out string
	err := c.Execute(ctx, "human-monitor-command", map[string]string{"command-line": line}, &out)
	return out, err
}

func (c *Client) call(ctx context.Context, command string, args any) (*message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	id := strconv.FormatUint(c.nextID, 10)
	c.nextID++
	ch := make(chan *message, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%s: encode arguments: %w", command, err)
	}
	if err := c.write(ctx, append(b, '\r', '\n')); err != nil {
		return nil, fmt.Errorf("%s: %w", command, err)
	}

	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		select {
		case m := <-ch: // answered just before the end
			return m, nil
		default:
		}
		return nil, fmt.Errorf("%s: %w", command, c.Err())
	}
}

// decodeResponse returns the *Error of an error response, or decodes a
// return value into result unless result is nil.
func decodeResponse(command string, m *message, result any) error {
	if m.kind == kindError {
		return &Error{Command: command, Class: m.Error.Class, Desc: m.Error.Desc}
	}
	if result != nil {
		if err := json.Unmarshal(m.Return, result); err != nil {
			return fmt.Errorf("%s: decode return value: %w", command, err)
		}
	}
	return nil
}

// write sends one message. A failed write, or one cut off by ctx, may
// leave half a message on the wire, so it ends the connection.
func (c *Client) write(ctx context.Context, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := bounded(ctx, c.conn.SetWriteDeadline, func() error {
		_, err := c.conn.Write(b)
		return err
	})
	if err != nil {
		c.fail(fmt.Errorf("%w: write: %v", ErrClosed, err))
	}
	return err
}

// bounded runs fn, an I/O step, with a connection deadline (set is
// SetDeadline or SetWriteDeadline) that expires when ctx ends. It returns
// ctx's error when ctx cut fn short, and fn's own result when fn finished.
func bounded(ctx context.Context, set func(time.Time) error, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = set(past)
		close(fired)
	})
	err := fn()
	if !stop() {
		<-fired
		if err != nil {
			return ctx.Err()
		}
		_ = set(time.Time{})
	}
	return err
}

// read dispatches responses and events until the connection ends.
func (c *Client) read(dec *decoder) {
	defer close(c.done)
	for {
		m, err := dec.next()
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		switch m.kind {
		case kindReturn, kindError:
			c.mu.Lock()
			ch := c.pending[m.id()]
			c.mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default: // a second response to one id: drop it
				}
			}
		case kindEvent:
			c.publish(m.event())
		}
	}
}

// fail ends the connection with err (the first reason wins).
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	subs := c.subs
	c.subs = map[*Subscription]struct{}{}
	for s := range subs {
		close(s.ch)
	}
	c.mu.Unlock()
	_ = c.conn.Close()
}

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close ends the connection and waits for its reader to stop. Calls
// waiting for a response return ErrClosed. Idempotent.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// Subscription receives the events QEMU sends after Subscribe.
type Subscription struct {
	c       *Client
	ch      chan Event
	dropped int
}

// Subscribe starts delivering events to a new subscription. Subscribe
// before the command whose events you wait for, so none is missed.
func (c *Client) Subscribe() *Subscription {
	s := &Subscription{c: c, ch: make(chan Event, EventBuffer)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		close(s.ch)
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// C delivers the events. It is closed when the subscription is closed or
// the connection ends.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped returns how many events were dropped because C was full.
func (s *Subscription) Dropped() int {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.dropped
}

// Close stops delivery and closes C. Idempotent.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if _, ok := s.c.subs[s]; ok {
		delete(s.c.subs, s)
		close(s.ch)
	}
}

func (c *Client) publish(e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		select {
		case s.ch <- e:
		default:
			s.dropped++
		}
	}
}

// IsClass reports whether err is a QMP *Error of the given class.
func IsClass(err error, class string) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Class == class
}
