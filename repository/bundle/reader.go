package bundle

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Getter is the part of a repository a reader needs: ranged reads.
// repository.Repository satisfies it.
type Getter interface {
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
}

// Reader reads files out of a stored bundle with ranged reads: opening it
// reads the header, the trailer and the index; each file then costs one
// read of its own frame.
type Reader struct {
	src     Getter
	name    string
	key     *Key
	hdr     header
	entries []Entry
	created time.Time
	byName  map[string]int
}

// Open reads and verifies the bundle's header, trailer and index. size is
// the object's size (from Stat or a listing). key may be nil for a plain
// bundle; an encrypted one then gives ErrKeyRequired, one sealed with
// another key ErrWrongKey, and a plain one read with a key
// ErrNotEncrypted. A sealed bundle opens only under the object name it
// was written for (NewWriter).
func Open(ctx context.Context, src Getter, name string, size int64, key *Key) (*Reader, error) {
	r := &Reader{src: src, name: name, key: key}
	if size < headerSize+trailerSize {
		return nil, r.corrupt("", "too short to be a bundle")
	}
	hb, err := r.read(ctx, 0, headerSize)
	if err != nil {
		return nil, err
	}
	if r.hdr, err = parseHeader(hb); err != nil {
		return nil, r.corrupt("", err.Error())
	}
	tb, err := r.read(ctx, size-trailerSize, trailerSize)
	if err != nil {
		return nil, err
	}
	t, err := parseTrailer(tb, size)
	if err != nil {
		return nil, r.corrupt("", err.Error())
	}
	if t.indexLength > MaxIndex {
		return nil, fmt.Errorf("open bundle %s: %w: index of %d bytes, at most %d", name, repository.ErrTooLarge, t.indexLength, MaxIndex)
	}
	idx, err := r.read(ctx, t.indexOffset, t.indexLength)
	if err != nil {
		return nil, err
	}
	sum := sha256.New()
	sum.Write(hb)
	sum.Write(idx)
	if !bytes.Equal(sum.Sum(nil), t.sum[:]) {
		return nil, r.corrupt("", "header or index checksum mismatch")
	}
	// Only now is the header known to be intact, flags included.
	switch {
	case r.hdr.encrypted && key == nil:
		return nil, fmt.Errorf("open bundle %s: %w", name, ErrKeyRequired)
	case !r.hdr.encrypted && key != nil:
		return nil, fmt.Errorf("open bundle %s: %w: refused, it could be forged", name, ErrNotEncrypted)
	case r.hdr.encrypted && key.check != r.hdr.keyCheck:
		return nil, fmt.Errorf("open bundle %s: %w (bundle key check %x, given key %x)", name, ErrWrongKey, r.hdr.keyCheck, key.check)
	}
	if r.hdr.encrypted {
		if len(idx) < 12 {
			return nil, r.corrupt("", "sealed index too short")
		}
		if r.hdr.version < 2 {
			return nil, fmt.Errorf("open bundle %s: %w", name, ErrUnbound)
		}
		idx, err = key.aead.Open(nil, idx[:12], idx[12:], indexAAD(r.hdr.id, name))
		if err != nil {
			return nil, r.corrupt("", "index authentication failed (sealed for another object name, or altered)")
		}
	}
	if r.entries, r.created, err = decodeIndex(idx, t.indexOffset, r.hdr.sums); err != nil {
		return nil, r.corrupt("", err.Error())
	}
	r.byName = make(map[string]int, len(r.entries))
	for i, e := range r.entries {
		r.byName[e.Name] = i
	}
	return r, nil
}

func (r *Reader) corrupt(file, reason string) error {
	return &CorruptError{Bundle: r.name, File: file, Reason: reason}
}

func (r *Reader) read(ctx context.Context, off, n int64) ([]byte, error) {
	rc, err := r.src.Get(ctx, r.name, off, n)
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", r.name, err)
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("read bundle %s at %d: %w", r.name, off, err)
	}
	return b, nil
}

// Created is when the bundle was written (Writer.SetCreated); zero when
// its writer did not say.
func (r *Reader) Created() time.Time { return r.created }

// Entries returns the files in the bundle, in bundle order.
func (r *Reader) Entries() []Entry { return append([]Entry(nil), r.entries...) }

// Entry returns the entry of the named file.
func (r *Reader) Entry(name string) (Entry, bool) {
	i, ok := r.byName[name]
	if !ok {
		return Entry{}, false
	}
	return r.entries[i], true
}

// WriteFile streams the raw content of the named file to w, reading only
// its frame. Integrity is checked as it streams and fully at the end: on an
// error, what was written to w must be discarded (write to a temporary file
// and rename on success). A failed check gives a *CorruptError naming the
// file.
func (r *Reader) WriteFile(ctx context.Context, name string, w io.Writer) (Entry, error) {
	return r.writeFrame(ctx, name, w, true)
}

// WriteCompressed streams the named file to w as it is stored, a zstd or
// S2 stream as the Entry's Codec says (opened, when the bundle is
// encrypted), without decompressing it:
// for a receiver that decompresses it anyway, such as a guest across a
// link. Every chunk is checked as it streams and the frame's footer against
// the index at the end, but not the content: whoever decompresses the
// stream must check its size and checksum against the Entry (the same as
// Reader.Entry's) before using it. On an error, what was written to w must
// be discarded; a failed check gives a *CorruptError naming the file.
func (r *Reader) WriteCompressed(ctx context.Context, name string, w io.Writer) (Entry, error) {
	return r.writeFrame(ctx, name, w, false)
}

func (r *Reader) writeFrame(ctx context.Context, name string, w io.Writer, decompress bool) (Entry, error) {
	e, ok := r.Entry(name)
	if !ok {
		return Entry{}, fmt.Errorf("bundle %s: %s: %w", r.name, name, ErrNoSuchFile)
	}
	rc, err := r.src.Get(ctx, r.name, e.Offset, e.Length)
	if err != nil {
		return e, fmt.Errorf("read %s from bundle %s: %w", name, r.name, err)
	}
	defer rc.Close()
	err = r.readFrame(e, bufio.NewReaderSize(io.LimitReader(rc, e.Length), 64<<10), w, decompress)
	var ce *CorruptError
	if errors.As(err, &ce) {
		return e, err
	}
	if err != nil {
		return e, fmt.Errorf("read %s from bundle %s: %w", name, r.name, err)
	}
	return e, nil
}

// readFrame checks the frame of e and writes its content to w: raw and
// checked against e when decompress is set, else the stored stream.
func (r *Reader) readFrame(e Entry, in *bufio.Reader, w io.Writer, decompress bool) error {
	bad := func(format string, args ...any) error { return r.corrupt(e.Name, fmt.Sprintf(format, args...)) }
	fixed := make([]byte, 7)
	if _, err := io.ReadFull(in, fixed); err != nil {
		return bad("frame header: %v", err)
	}
	nameLen := int(binary.BigEndian.Uint16(fixed[5:]))
	if string(fixed[:4]) != frameMagic || Codec(fixed[4]) != e.Codec || nameLen != len(e.Name) {
		return bad("frame header does not match the index")
	}
	rest := make([]byte, nameLen+12)
	if _, err := io.ReadFull(in, rest); err != nil {
		return bad("frame header: %v", err)
	}
	if string(rest[:nameLen]) != e.Name {
		return bad("frame name %q does not match the index", rest[:nameLen])
	}
	var nonce [12]byte
	copy(nonce[:], rest[nameLen:])
	fh := append(fixed, rest...)
	if !r.hdr.encrypted && nonce != [12]byte{} {
		return bad("nonce set in a plain bundle")
	}

	cr := &chunkReader{r: r, in: in, fh: fh, nonce: nonce, entry: e}
	out := &errWriter{w: w}
	sum := checksum.New(r.hdr.sums)
	var n int64
	var err error
	switch {
	case decompress && e.Codec == S2:
		dec := zpool.GetS2Reader(cr)
		defer zpool.PutS2Reader(dec)
		n, err = io.Copy(io.MultiWriter(out, sum), dec)
	case decompress:
		dec, derr := zpool.GetDecoder(cr)
		if derr != nil {
			return derr
		}
		defer zpool.PutDecoder(dec)
		n, err = io.Copy(io.MultiWriter(out, sum), dec)
	default:
		_, err = io.Copy(out, cr) // to the end of the chunks
	}
	switch {
	case out.err != nil:
		return out.err // the destination failed: not the bundle's fault
	case cr.err != nil:
		return cr.err // the chunk layer knows best what broke
	case err != nil:
		return bad("decompress: %v", err)
	}
	if !cr.done {
		return bad("data after the end of the compressed stream")
	}
	footer := make([]byte, footerSize)
	if r.hdr.encrypted {
		footer = make([]byte, footerSize+r.key.aead.Overhead())
	}
	if _, err := io.ReadFull(in, footer); err != nil {
		return bad("frame footer: %v", err)
	}
	if r.hdr.encrypted {
		if footer, err = r.key.aead.Open(footer[:0], chunkNonce(nonce, footerChunk), footer, chunkAAD(r.hdr.id, fh, footerChunk, true)); err != nil {
			return bad("footer authentication failed")
		}
	}
	raw := int64(binary.BigEndian.Uint64(footer))
	switch {
	case raw != e.RawSize || !bytes.Equal(footer[8:], e.Sum.Digest[:]):
		return bad("frame footer does not match the index")
	case decompress && n != e.RawSize:
		return bad("size %d, want %d", n, e.RawSize)
	case decompress && sum.Sum() != e.Sum:
		return bad("%v checksum mismatch", e.Sum.Algorithm)
	}
	if extra, _ := in.Peek(1); len(extra) > 0 {
		return bad("bytes after the frame")
	}
	return nil
}

// errWriter remembers the destination's error, which io.Copy would report
// just like a read error; only read errors mean corruption.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// chunkReader yields a frame's payload, checking (and opening) each chunk.
type chunkReader struct {
	r     *Reader
	in    *bufio.Reader
	fh    []byte
	nonce [12]byte
	entry Entry
	n     uint32
	buf   []byte
	done  bool
	final bool
	err   error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.done {
			return 0, io.EOF
		}
		if err := c.next(); err != nil {
			c.err = err
			return 0, err
		}
	}
	k := copy(p, c.buf)
	c.buf = c.buf[k:]
	return k, nil
}

func (c *chunkReader) next() error {
	bad := func(format string, args ...any) error { return c.r.corrupt(c.entry.Name, fmt.Sprintf(format, args...)) }
	var l [4]byte
	if _, err := io.ReadFull(c.in, l[:]); err != nil {
		return bad("chunk %d: %v", c.n, err)
	}
	word := binary.BigEndian.Uint32(l[:])
	size, final := int(word&^finalBit), word&finalBit != 0
	overhead := 0
	if c.r.hdr.encrypted {
		overhead = c.r.key.aead.Overhead()
	}
	if word == 0 {
		if !c.final {
			return bad("chunks end without the final one")
		}
		c.done = true
		return nil
	}
	if c.final {
		return bad("chunk after the final one")
	}
	if size > ChunkSize+overhead || size < overhead {
		return bad("chunk %d has impossible length %d", c.n, size)
	}
	if cap(c.buf) < size {
		c.buf = make([]byte, size)
	}
	c.buf = c.buf[:size]
	if _, err := io.ReadFull(c.in, c.buf); err != nil {
		return bad("chunk %d: %v", c.n, err)
	}
	if !c.r.hdr.encrypted {
		var sum [4]byte
		if _, err := io.ReadFull(c.in, sum[:]); err != nil {
			return bad("chunk %d: %v", c.n, err)
		}
		if crc32.Update(crc32.Checksum(l[:], castagnoli), castagnoli, c.buf) != binary.BigEndian.Uint32(sum[:]) {
			return bad("chunk %d checksum mismatch", c.n)
		}
	}
	if c.r.hdr.encrypted {
		// The final flag is in the clear but authenticated through the AAD.
		plain, err := c.r.key.aead.Open(c.buf[:0], chunkNonce(c.nonce, c.n), c.buf, chunkAAD(c.r.hdr.id, c.fh, c.n, final))
		if err != nil {
			return bad("chunk %d authentication failed", c.n)
		}
		c.buf = plain
	}
	c.final = final
	c.n++
	return nil
}

// IsBundle tells whether b starts as a bundle does (its header's magic),
// to tell a bundle from another object before opening it.
func IsBundle(b []byte) bool { return bytes.HasPrefix(b, []byte(headerMagic)) }

// OpenBytes opens a bundle held in memory whole, stored as name; see Open.
func OpenBytes(ctx context.Context, b []byte, name string, key *Key) (*Reader, error) {
	return Open(ctx, bytesGetter(b), name, int64(len(b)), key)
}

// bytesGetter serves ranged reads of a bundle in memory.
type bytesGetter []byte

func (b bytesGetter) Get(_ context.Context, _ string, off, n int64) (io.ReadCloser, error) {
	if off < 0 || off > int64(len(b)) {
		return nil, repository.ErrInvalidRange
	}
	end := int64(len(b))
	if n >= 0 && off+n < end {
		end = off + n
	}
	return io.NopCloser(bytes.NewReader(b[off:end])), nil
}

// ReadFile returns the content of the file name, checked as WriteFile
// checks it. A file whose index entry says more than limit bytes is
// repository.ErrTooLarge before it is read, and reading stops there too:
// a frame that decompresses without end cannot fill the memory.
func (r *Reader) ReadFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	e, ok := r.Entry(name)
	if !ok {
		return nil, fmt.Errorf("read %s from bundle %s: %w", name, r.name, ErrNoSuchFile)
	}
	if e.RawSize > limit {
		return nil, fmt.Errorf("read %s from bundle %s: %w: %d bytes, at most %d", name, r.name, repository.ErrTooLarge, e.RawSize, limit)
	}
	buf := &limitedBuffer{n: int(limit)}
	if _, err := r.WriteFile(ctx, name, buf); err != nil {
		return nil, err
	}
	return buf.b.Bytes(), nil
}

// limitedBuffer fails with repository.ErrTooLarge past n bytes.
type limitedBuffer struct {
	b bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.n {
		return 0, fmt.Errorf("%w: over %d bytes", repository.ErrTooLarge, l.n)
	}
	return l.b.Write(p)
}
