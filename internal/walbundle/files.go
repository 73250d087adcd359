package walbundle

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"github.com/pglogship/pglogship/internal/zpool"
)

// Source opens a file to bundle by name; its content must hold still
// while it is read (WAL in the guest's temporary folder does).
type Source func(name string) (io.ReadCloser, error)

// packed is one file read, summed and compressed by a worker.
type packed struct {
	raw   *[]byte // the raw content, for the summary; back to the pool once used
	frame []byte  // one zstd frame
	sum   [32]byte
	err   error
}

var rawBuffers = sync.Pool{New: func() any { return new([]byte) }}

// AddFiles bundles names in this order, as Add with raw content would one
// after another, but reads, sums and compresses up to workers of them at
// once, each on a core of its own, while the files before are summarized
// and written in order. At most workers files are held in memory, raw and
// compressed. For the guest, which reads its own files: their sums are
// its own (Writer.AddEncoded).
func (b *Builder) AddFiles(ctx context.Context, names []string, open Source, workers int) error {
	workers = max(1, workers)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: deferred calls run last first
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slots := make([]chan packed, len(names))
	for i := range slots {
		slots[i] = make(chan packed, 1)
	}
	turn := make(chan int)
	free := make(chan struct{}, workers) // a token per file in memory
	wg.Add(1)
	go func() { // hands out the files in order, as memory frees up
		defer wg.Done()
		defer close(turn)
		for i := range names {
			select {
			case free <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case turn <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc := zpool.GetEncoder(nil)
			defer zpool.PutEncoder(enc)
			for i := range turn {
				slots[i] <- pack(names[i], open, enc)
			}
		}()
	}
	for i, name := range names {
		var p packed
		select {
		case p = <-slots[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if p.err != nil {
			return p.err
		}
		err := b.addPacked(name, p)
		rawBuffers.Put(p.raw)
		<-free
		if err != nil {
			return err
		}
	}
	return nil
}

// pack reads one file whole, sums it and compresses it into one frame.
func pack(name string, open Source, enc interface {
	EncodeAll(src, dst []byte) []byte
}) packed {
	p := packed{raw: rawBuffers.Get().(*[]byte)}
	r, err := open(name)
	if err != nil {
		p.err = err
		return p
	}
	defer r.Close()
	buf := (*p.raw)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			p.err = fmt.Errorf("read %s: %w", name, err)
			return p
		}
	}
	*p.raw = buf
	p.sum = sha256.Sum256(buf)
	p.frame = enc.EncodeAll(buf, make([]byte, 0, len(buf)/4))
	return p
}

// addPacked summarizes a packed file and appends its frame.
func (b *Builder) addPacked(name string, p packed) error {
	raw := *p.raw
	if w := b.sums.tap(name); w != nil {
		_, _ = w.Write(raw) // lenient: never fails
	}
	e, err := b.w.AddEncoded(name, p.frame, int64(len(raw)), p.sum)
	if err != nil {
		return err
	}
	meta, u := b.sums.end(name)
	if meta != nil {
		if err := b.w.SetMeta(name, meta); err != nil {
			return err
		}
	}
	if u != nil {
		b.unknown = append(b.unknown, *u)
	}
	b.files = append(b.files, File{Name: name, RawSize: e.RawSize, SHA256: e.SHA256})
	b.raw += e.RawSize
	return nil
}
