// Package asyncw runs a writer in its own goroutine: Write copies into one
// of a few fixed buffers and returns, so hashing or parsing what passes
// through overlaps with the caller's work (compressing, decompressing)
// on another core. Memory is bounded by the buffers, not by the volume.
package asyncw

import (
	"errors"
	"io"
)

// Writer hands what it is given to an underlying writer in a goroutine.
// Not safe for concurrent use.
type Writer struct {
	w      io.Writer
	free   chan []byte
	full   chan []byte
	done   chan struct{}
	err    error // the underlying writer's first error, read after done
	cur    []byte
	closed bool
}

// New returns an idle Writer with n buffers of size bytes each (n at
// least 2); Reset starts it. An idle Writer holds no goroutine.
func New(size, n int) *Writer {
	n = max(n, 2)
	a := &Writer{free: make(chan []byte, n), closed: true}
	for i := 0; i < n; i++ {
		a.free <- make([]byte, 0, size)
	}
	return a
}

// Reset starts writing to w, after closing what the Writer wrote before.
// Close it when done, or its goroutine stays.
func (a *Writer) Reset(w io.Writer) {
	a.Close()
	a.start(w)
}

func (a *Writer) start(w io.Writer) {
	a.w, a.err, a.closed = w, nil, false
	a.full, a.done = make(chan []byte, cap(a.free)), make(chan struct{})
	go func() {
		defer close(a.done)
		for b := range a.full {
			if a.err == nil {
				_, a.err = a.w.Write(b)
			}
			a.free <- b[:0]
		}
	}()
}

// Write copies p into the buffers, handing each full one over. An error
// of the underlying writer shows on Close; writes go on being taken until
// then.
func (a *Writer) Write(p []byte) (int, error) {
	if a.closed {
		return 0, errors.New("asyncw: write to a closed writer")
	}
	n := 0
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
		}
		c := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+c]
		p, n = p[c:], n+c
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// Close hands over what is left, waits until the underlying writer has
// taken everything and returns its first error.
func (a *Writer) Close() error {
	if a.closed {
		if a.done != nil {
			<-a.done
		}
		return a.err
	}
	a.closed = true
	if len(a.cur) > 0 {
		a.full <- a.cur
	}
	a.cur = nil
	close(a.full)
	<-a.done
	return a.err
}
