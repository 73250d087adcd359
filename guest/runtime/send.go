package runtime

import (
	"github.com/pglogship/pglogship/internal/walbundle"

	"github.com/pglogship/pglogship/repository/checksum"

	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/internal/asyncw"
	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/wal"
)

// Sender streams files to the host, WAL from the temporary folder (Send)
// or any other content (Stream): each one compressed once, here in the
// guest, through fixed-size buffers. Not safe for concurrent use.
type Sender struct {
	w      *proto.Writer
	hash   *asyncw.Writer // SHA-256 on another core while Stream compresses; made by Stream
	chunks *proto.Chunker // made by Stream
	inst   guest.Instance
	codec  guest.Codec // CodecZstd or CodecS2; empty means zstd
}

// encoder returns a stream encoder of s's codec writing to w, and how to
// give it back.
func (s *Sender) encoder(w io.Writer) (io.WriteCloser, guest.Codec, func()) {
	if s.codec == guest.CodecS2 {
		e := zpool.GetS2Writer(w)
		return e, guest.CodecS2, func() { zpool.PutS2Writer(e) }
	}
	e := zpool.GetEncoder(w)
	return e, guest.CodecZstd, func() { zpool.PutEncoder(e) }
}

// NewSender returns a Sender that checks segments against inst and writes
// frames to w.
func NewSender(w *proto.Writer, inst guest.Instance) (*Sender, error) {
	return &Sender{w: w, inst: inst}, nil
}

// Send streams dir/name as FileStart, Data frames and FileEnd. A segment
// (or .partial) whose size or first page header does not match its name
// and this cluster is refused before anything is sent, with an error
// matching wal.ErrBadSegment; the file stays where it is. An error after
// FileStart leaves the host with an unfinished file, which it must discard.
func (s *Sender) Send(dir, name string) error {
	f, err := s.open(dir, name)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.stream(name, f, walbundle.Checksum)
}

// open opens dir/name for sending, a segment (or .partial) only once its
// size and first page header match its name and this cluster.
func (s *Sender) open(dir, name string) (*os.File, error) {
	fn, err := wal.ParseFileName(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("send %s: %w", name, err)
	}
	if fn.Kind == wal.Segment || fn.Kind == wal.Partial {
		if err := s.check(f, name); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// Stream sends what r yields as the file name: FileStart, compressed
// Data frames of at most MaxData, and a FileEnd with the size and SHA-256 of
// the raw bytes. An error after FileStart leaves the host with an
// unfinished file, which it must discard.
func (s *Sender) Stream(name string, r io.Reader) error { return s.stream(name, r, checksum.SHA256) }

// stream is Stream with the checksum's algorithm.
func (s *Sender) stream(name string, r io.Reader, alg checksum.Algorithm) error {
	enc, codec, put := s.encoder(s)
	defer put()
	if err := s.w.WriteJSON(proto.TypeFileStart, proto.FileStart{Name: name, Codec: string(codec)}); err != nil {
		return err
	}
	if s.hash == nil {
		s.hash = asyncw.New(256<<10, 4)
		s.chunks = proto.NewChunker(proto.MaxData, func(b []byte) error { return s.w.Write(proto.TypeData, b) })
	}
	sum := checksum.New(alg)
	// SHA-256 runs on another core; XXH3 costs less than handing it over.
	async := alg == checksum.SHA256
	var hw io.Writer = sum
	if async {
		s.hash.Reset(sum)
		hw = s.hash
	}
	n, err := io.Copy(io.MultiWriter(enc, hw), r)
	if async {
		if herr := s.hash.Close(); err == nil {
			err = herr
		}
	}
	if err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	if err := enc.Close(); err != nil {
		return err
	}
	if err := s.chunks.Flush(); err != nil {
		return err
	}
	return s.w.WriteJSON(proto.TypeFileEnd, proto.FileEnd{Name: name, RawSize: n, Sum: sum.Sum().String()})
}

func (s *Sender) check(f *os.File, name string) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	if st.Size() != s.inst.WALSegmentSize {
		return fmt.Errorf("%w: %s: size %d, segments are %d bytes", wal.ErrBadSegment, name, st.Size(), s.inst.WALSegmentSize)
	}
	head := make([]byte, wal.LongHeaderSize)
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	if err := wal.CheckSegmentHeader(name, head, s.inst.WALSegmentSize, s.inst.SystemID, s.inst.Version); err != nil {
		return err
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// Write collects compressed bytes into Data frames of at most MaxData.
func (s *Sender) Write(p []byte) (int, error) { return s.chunks.Write(p) }

// packed is one file compressed ahead by SendAll, waiting for its turn.
type packed struct {
	data  []byte // the compressed stream
	codec guest.Codec
	buf   *bytes.Buffer // holds data; back to packBuffers once sent
	raw   int64
	sum   checksum.Sum
	err   error // from opening, checking or reading: nothing was sent
}

// SendAll sends the files names in dir in that order, as Send would one
// after another, compressing up to workers of them at once on other cores
// while the one before is written: each waits whole, compressed, in memory
// (at most workers+1 files). A file refused by the checks stops SendAll
// before its FileStart, after the files before it were sent.
func (s *Sender) SendAll(dir string, names []string, workers int) error {
	if workers <= 1 || len(names) < 2 {
		for _, n := range names {
			if err := s.Send(dir, n); err != nil {
				return err
			}
		}
		return nil
	}
	done := make(chan struct{})
	defer close(done)
	slots := make(chan struct{}, workers)
	results := make([]chan packed, len(names))
	for i := range results {
		results[i] = make(chan packed, 1)
	}
	go func() {
		for i, n := range names {
			select {
			case slots <- struct{}{}:
			case <-done:
				return
			}
			go func() { results[i] <- s.pack(dir, n) }()
		}
	}()
	for i, n := range names {
		p := <-results[i]
		<-slots
		if p.err != nil {
			return p.err
		}
		if err := s.w.WriteJSON(proto.TypeFileStart, proto.FileStart{Name: n, Codec: string(p.codec)}); err != nil {
			return err
		}
		for b := p.data; len(b) > 0; {
			k := min(len(b), proto.MaxData)
			if err := s.w.Write(proto.TypeData, b[:k]); err != nil {
				return err
			}
			b = b[k:]
		}
		if err := s.w.WriteJSON(proto.TypeFileEnd, proto.FileEnd{Name: n, RawSize: p.raw, Sum: p.sum.String()}); err != nil {
			return err
		}
		putPackBuffer(p.buf)
	}
	return nil
}

// pack reads, checks and compresses one file for SendAll, with an encoder
// of its own.
func (s *Sender) pack(dir, name string) (p packed) {
	f, err := s.open(dir, name)
	if err != nil {
		return packed{err: err}
	}
	defer f.Close()
	buf := getPackBuffer()
	enc, codec, put := s.encoder(buf)
	defer put()
	sum := checksum.New(walbundle.Checksum)
	n, err := io.Copy(io.MultiWriter(enc, sum), f)
	if err == nil {
		err = enc.Close()
	}
	if err != nil {
		putPackBuffer(buf)
		return packed{err: fmt.Errorf("send %s: %w", name, err)}
	}
	p = packed{data: buf.Bytes(), codec: codec, buf: buf, raw: n}
	p.sum = sum.Sum()
	return p
}

// Buffers are reused across files, like the encoders (internal/zpool),
// in a bounded pool that a garbage collection does not empty: megabytes made
// again for every segment would make the runtime's memory grow.
var packBuffers = make(chan *bytes.Buffer, 4)

func getPackBuffer() *bytes.Buffer {
	select {
	case b := <-packBuffers:
		b.Reset()
		return b
	default:
		return new(bytes.Buffer)
	}
}

func putPackBuffer(b *bytes.Buffer) {
	select {
	case packBuffers <- b:
	default:
	}
}
