package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}` + "\r\n"

// request is a command as the fake server sees it.
type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// fakeQMP is a scripted QMP server on a unix socket. handle runs in its
// own goroutine per command and answers through send.
type fakeQMP struct {
	path     string
	greeting string
	handle   func(req request, send func(v any))

	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startFake(t *testing.T, handle func(req request, send func(v any))) *fakeQMP {
	t.Helper()
	return startFakeGreeting(t, greeting, handle)
}

// startFakeGreeting starts a fake that opens each connection with hello
// (nothing when empty).
func startFakeGreeting(t *testing.T, hello string, handle func(req request, send func(v any))) *fakeQMP {
	t.Helper()
	dir, err := os.MkdirTemp("", "pglogship-qmp-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeQMP{path: filepath.Join(dir, "qmp.sock"), greeting: hello, handle: handle}
	f.ln, err = net.Listen("unix", f.path)
	require.NoError(t, err)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeQMP) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *fakeQMP) serve(c net.Conn) {
	defer f.wg.Done()
	var wmu sync.Mutex
	send := func(v any) {
		b, _ := json.Marshal(v)
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = c.Write(append(b, '\r', '\n'))
	}
	if f.greeting != "" {
		_, _ = c.Write([]byte(f.greeting))
	}
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			return
		}
		if req.Execute == "qmp_capabilities" {
			send(map[string]any{"return": map[string]any{}, "id": req.ID})
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handle(req, send)
		}()
	}
}

// dropConns closes every server-side connection.
func (f *fakeQMP) dropConns() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fakeQMP) stop() {
	f.ln.Close()
	f.dropConns()
	f.wg.Wait()
}

func ret(req request, v any) map[string]any { return map[string]any{"return": v, "id": req.ID} }

func dial(t *testing.T, f *fakeQMP) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, f.path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestQMPExecuteReturnsAndErrors(t *testing.T) {
	f := startFake(t, func(req request, send func(any)) {
		switch req.Execute {
		case "query-status":
			send(ret(req, map[string]any{"status": "running", "running": true}))
		case "echo":
			send(ret(req, req.Arguments))
		default:
			send(map[string]any{"id": req.ID, "error": map[string]string{
				"class": "CommandNotFound", "desc": "The command " + req.Execute + " has not been found"}})
		}
	})
	c := dial(t, f)
	ctx := context.Background()
	assert.Equal(t, Version{Major: 7, Minor: 2, Micro: 22, Package: "Debian"}, c.Version())

	var st struct{ Status string }
	require.NoError(t, c.Execute(ctx, "query-status", nil, &st))
	assert.Equal(t, "running", st.Status)

	var echo map[string]int
	require.NoError(t, c.Execute(ctx, "echo", map[string]int{"a": 1}, &echo))
	assert.Equal(t, map[string]int{"a": 1}, echo)

	err := c.Execute(ctx, "no-such-command", nil, nil)
	var qe *Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, &Error{Command: "no-such-command", Class: ClassCommandNotFound, Desc: "The command no-such-command has not been found"}, qe)
	assert.True(t, IsClass(err, ClassCommandNotFound))
	assert.EqualError(t, err, "no-such-command: The command no-such-command has not been found (CommandNotFound)")
}

func TestQMPConcurrentCallsAnsweredOutOfOrder(t *testing.T) {
	slowArrived, fastDone := make(chan struct{}), make(chan struct{})
	f := startFake(t, func(req request, send func(any)) {
		if req.Execute == "slow" {
			close(slowArrived)
			<-fastDone // answered only after "fast" was
		}
		send(ret(req, req.Execute))
		if req.Execute == "fast" {
			close(fastDone)
		}
	})
	c := dial(t, f)
	var slow, fast string
	errc := make(chan error, 1)
	go func() { errc <- c.Execute(context.Background(), "slow", nil, &slow) }()
	<-slowArrived
	require.NoError(t, c.Execute(context.Background(), "fast", nil, &fast))
	require.NoError(t, <-errc)
	assert.Equal(t, "slow", slow)
	assert.Equal(t, "fast", fast)
}

func TestQMPEventsReachEverySubscriber(t *testing.T) {
	f := startFake(t, func(req request, send func(any)) {
		send(map[string]any{"event": "JOB_STATUS_CHANGE", "data": map[string]string{"id": "j1", "status": "concluded"},
			"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 250}})
		send(ret(req, map[string]any{}))
	})
	c := dial(t, f)
	s1, s2 := c.Subscribe(), c.Subscribe()
	require.NoError(t, c.Execute(context.Background(), "job-go", nil, nil))
	for _, s := range []*Subscription{s1, s2} {
		select {
		case e := <-s.C():
			assert.Equal(t, "JOB_STATUS_CHANGE", e.Name)
			assert.JSONEq(t, `{"id":"j1","status":"concluded"}`, string(e.Data))
			assert.Equal(t, time.Unix(1700000000, 250000), e.Time)
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
	s1.Close()
	s1.Close() // idempotent
	_, open := <-s1.C()
	assert.False(t, open, "closed subscription's channel must be closed")
	assert.Zero(t, s2.Dropped())
}

func TestQMPContextEndsAWaitingCall(t *testing.T) {
	release := make(chan struct{})
	f := startFake(t, func(req request, send func(any)) {
		if req.Execute == "hang" {
			<-release
		}
		send(ret(req, req.Execute))
	})
	t.Cleanup(func() { close(release) })
	c := dial(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Execute(ctx, "hang", nil, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// The connection stays usable.
	var out string
	require.NoError(t, c.Execute(context.Background(), "after", nil, &out))
	assert.Equal(t, "after", out)

	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	require.ErrorIs(t, c.Execute(canceled, "after", nil, nil), context.Canceled)
}

func TestQMPLostConnectionEndsCallsAndSubscriptions(t *testing.T) {
	got := make(chan struct{})
	f := startFake(t, func(req request, send func(any)) { close(got) })
	c := dial(t, f)
	sub := c.Subscribe()
	errc := make(chan error, 1)
	go func() { errc <- c.Execute(context.Background(), "never-answered", nil, nil) }()
	<-got
	f.dropConns()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("call did not end with the connection")
	}
	<-c.Done()
	_, open := <-sub.C()
	assert.False(t, open)
	require.ErrorIs(t, c.Execute(context.Background(), "x", nil, nil), ErrClosed)
	late := c.Subscribe()
	_, open = <-late.C()
	assert.False(t, open)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
}

func TestQMPDialRefusesBadGreetingAndHonoursContext(t *testing.T) {
	t.Run("not a greeting", func(t *testing.T) {
		f := startFakeGreeting(t, `{"return": {}}`+"\r\n", nil)
		_, err := Dial(context.Background(), f.path)
		require.ErrorIs(t, err, ErrProtocol)
	})
	t.Run("events before the greeting", func(t *testing.T) {
		// What a previous client left behind is skipped, within bounds.
		event := `{"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "concluded"}, "timestamp": {"seconds": 1, "microseconds": 2}}` + "\r\n"
		f := startFakeGreeting(t, strings.Repeat(event, 3)+greeting, nil)
		c, err := Dial(context.Background(), f.path)
		require.NoError(t, err)
		require.NoError(t, c.Close())
		f = startFakeGreeting(t, strings.Repeat(event, maxEarlyEvents+1)+greeting, nil)
		_, err = Dial(context.Background(), f.path)
		require.ErrorIs(t, err, ErrProtocol)
	})
	t.Run("not JSON", func(t *testing.T) {
		f := startFakeGreeting(t, "HTTP/1.1 200 OK\r\n", nil)
		_, err := Dial(context.Background(), f.path)
		require.ErrorIs(t, err, ErrProtocol)
	})
	t.Run("silent server", func(t *testing.T) {
		// Silent like a monitor that is serving another client.
		f := startFakeGreeting(t, "", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, f.path)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("no socket", func(t *testing.T) {
		_, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
		require.Error(t, err)
	})
}

func TestQMPDecoderLimitsMessageSize(t *testing.T) {
	msg := `{"return": "` + strings.Repeat("a", 2000) + `"}` + "\r\n"
	// One byte a read, so the decoder cannot buffer the second message early.
	d := newDecoder(iotest.OneByteReader(strings.NewReader(msg + msg)))
	_, err := d.next()
	require.NoError(t, err)
	d.limit = 1000
	_, err = d.next()
	require.ErrorIs(t, err, ErrMessageTooLarge)
}
