package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/wal"
)

// Sender streams files to the host, WAL from the temporary folder (Send)
// or any other content (Stream): each one compressed once, here in the
// guest, through fixed-size buffers. Not safe for concurrent use.
type Sender struct {
	w      *proto.Writer
	enc    *zstd.Encoder
	chunks *proto.Chunker
	inst   guest.Instance
}

// NewSender returns a Sender that checks segments against inst and writes
// frames to w.
func NewSender(w *proto.Writer, inst guest.Instance) (*Sender, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, err
	}
	chunks := proto.NewChunker(proto.MaxData, func(b []byte) error { return w.Write(proto.TypeData, b) })
	return &Sender{w: w, enc: enc, chunks: chunks, inst: inst}, nil
}

// Send streams dir/name as FileStart, Data frames and FileEnd. A segment
// (or .partial) whose size or first page header does not match its name
// and this cluster is refused before anything is sent, with an error
// matching wal.ErrBadSegment; the file stays where it is. An error after
// FileStart leaves the host with an unfinished file, which it must discard.
func (s *Sender) Send(dir, name string) error {
	fn, err := wal.ParseFileName(name)
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	defer f.Close()
	if fn.Kind == wal.Segment || fn.Kind == wal.Partial {
		if err := s.check(f, name); err != nil {
			return err
		}
	}
	return s.Stream(name, f)
}

// Stream sends what r yields as the file name: FileStart, zstd-compressed
// Data frames of at most MaxData, and a FileEnd with the size and SHA-256 of
// the raw bytes. An error after FileStart leaves the host with an
// unfinished file, which it must discard.
func (s *Sender) Stream(name string, r io.Reader) error {
	if err := s.w.WriteJSON(proto.TypeFileStart, proto.FileStart{Name: name, Codec: string(guest.CodecZstd)}); err != nil {
		return err
	}
	sum := sha256.New()
	s.enc.Reset(s)
	n, err := io.Copy(io.MultiWriter(s.enc, sum), r)
	if err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	if err := s.enc.Close(); err != nil {
		return err
	}
	if err := s.chunks.Flush(); err != nil {
		return err
	}
	return s.w.WriteJSON(proto.TypeFileEnd, proto.FileEnd{Name: name, RawSize: n, SHA256: hex.EncodeToString(sum.Sum(nil))})
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
