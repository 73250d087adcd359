package walbundle

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Source opens a file to bundle by name; its content must hold still
// while it is read (WAL in the guest's temporary folder does).
type Source func(name string) (io.ReadCloser, error)

// packed is one file summed and compressed by a worker.
type packed struct {
	frame *[]byte // the compressed file; back to the pool once written
	raw   int64
	sum   checksum.Sum
	err   error
}

// frames holds the compressed files between their worker and the writer.
var frames = sync.Pool{New: func() any { return new([]byte) }}

// AddFiles bundles names in this order, as Add with raw content would one
// after another but compressed with codec (Zstd or S2), and sums and
// compresses up to workers of them at once,
// each on a core of its own, while the files before are summarized and
// written in order. Files stream through fixed buffers: at most workers
// compressed files are held in memory, never a raw one. The summary reads
// each file a second time (from the page cache), so the files must hold
// still. For the guest, which reads its own files: the sums are its own
// (Writer.AddEncoded).
func (b *Builder) AddFiles(ctx context.Context, names []string, open Source, workers int, codec bundle.Codec) error {
	if codec != bundle.Zstd && codec != bundle.S2 {
		return fmt.Errorf("bundle files: codec %d is not a compressed one", codec)
	}
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
	free := make(chan struct{}, workers) // a token per compressed file in memory
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
			var enc encoder
			if codec == bundle.S2 {
				w := zpool.GetS2Writer(nil)
				defer zpool.PutS2Writer(w)
				enc = w
			} else {
				// zpool's settings, without the frame's own checksum: the
				// file's checksum covers it.
				z, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest),
					zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(false))
				defer z.Close()
				enc = z
			}
			buf := make([]byte, readBuffer)
			for i := range turn {
				slots[i] <- pack(names[i], open, enc, buf)
			}
		}()
	}
	buf := make([]byte, readBuffer)
	for i, name := range names {
		var p packed
		select {
		case p = <-slots[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		err := p.err
		if err == nil {
			err = b.addPacked(name, codec, p, open, buf)
		}
		if p.frame != nil {
			frames.Put(p.frame)
		}
		<-free
		if err != nil {
			return err
		}
	}
	return nil
}

// readBuffer is how much of a file a worker or the summary reads at once.
const readBuffer = 256 << 10

// frameWriter appends to a pooled frame buffer.
type frameWriter struct{ b *[]byte }

func (f frameWriter) Write(p []byte) (int, error) {
	*f.b = append(*f.b, p...)
	return len(p), nil
}

// encoder is a zstd or S2 stream writer.
type encoder interface {
	io.WriteCloser
	Reset(io.Writer)
}

// pack streams one file through its checksum and the encoder into one
// frame.
func pack(name string, open Source, enc encoder, buf []byte) packed {
	p := packed{frame: frames.Get().(*[]byte)}
	*p.frame = (*p.frame)[:0]
	r, err := open(name)
	if err != nil {
		p.err = err
		return p
	}
	defer r.Close()
	enc.Reset(frameWriter{p.frame})
	h := checksum.New(Checksum)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, werr := enc.Write(buf[:n]); werr != nil {
				p.err = werr
				return p
			}
			p.raw += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			p.err = fmt.Errorf("read %s: %w", name, err)
			return p
		}
	}
	if err := enc.Close(); err != nil {
		p.err = err
		return p
	}
	p.sum = h.Sum()
	return p
}

// addPacked summarizes a file, reading it again, and appends its frame.
func (b *Builder) addPacked(name string, codec bundle.Codec, p packed, open Source, buf []byte) error {
	if w := b.sums.tap(name); w != nil {
		r, err := open(name)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, buf) // lenient: only reading fails
		r.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	e, err := b.w.AddEncoded(name, codec, *p.frame, p.raw, p.sum)
	if err != nil {
		return err
	}
	_, err = b.added(e)
	return err
}
