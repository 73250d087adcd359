package testenv

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections on 127.0.0.1 to a target, and can cut
// them: a path between a guest and a store that tests break on purpose.
type Proxy struct {
	Addr string // host:port it listens on

	ln       net.Listener
	target   string
	cutAfter atomic.Int64 // client bytes after which a connection is cut; < 0 never
	down     atomic.Bool
	sent     atomic.Int64
	mu       sync.Mutex
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

// StartProxy forwards 127.0.0.1:<random port> to target until the test
// ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.cutAfter.Store(-1)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

// CutAfter cuts every connection made from now on once the client has
// sent n bytes through it; n < 0 never cuts.
func (p *Proxy) CutAfter(n int64) { p.cutAfter.Store(n) }

// Sent is how many bytes clients have sent through the proxy.
func (p *Proxy) Sent() int64 { return p.sent.Load() }

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Down refuses new connections (they are closed at once) and cuts the
// open ones; Up lets them through again.
func (p *Proxy) Down() {
	p.down.Store(true)
	p.closeAll()
}

// Up ends Down.
func (p *Proxy) Up() { p.down.Store(false) }

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c, p.cutAfter.Load())
	}
}

func (p *Proxy) serve(c net.Conn, cut int64) {
	defer p.wg.Done()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.track(c, true)
	p.track(s, true)
	defer func() {
		c.Close()
		s.Close()
		p.track(c, false)
		p.track(s, false)
	}()
	done := make(chan struct{}, 2)
	go func() {
		var src io.Reader = c
		if cut >= 0 {
			src = io.LimitReader(c, cut)
		}
		_, _ = io.Copy(countingWriter{s, &p.sent}, src)
		done <- struct{}{}
	}()
	go func() {
		_, err := io.Copy(c, s)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			c.Close()
		}
		done <- struct{}{}
	}()
	<-done // either side ending (or the cut) ends both
}
