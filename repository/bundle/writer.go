package bundle

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/internal/asyncw"
	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Codec says how the bytes given to Writer.Add are encoded.
type Codec int

const (
	Raw  Codec = iota // the file as PostgreSQL wrote it: Add compresses it (zstd)
	Zstd              // already zstd-compressed (by the guest): Add stores it as is
	// S2 is an S2 stream (github.com/klauspost/compress/s2), a codec about
	// three times faster than zstd's fastest level at half its ratio on
	// WAL, with a CRC-32C of every block's raw bytes; Add stores it as is.
	S2
)

// Writer writes one bundle to an io.Writer, a frame per file, streaming
// through fixed-size buffers: memory does not grow with file or bundle
// size. It is not safe for concurrent use.
type Writer struct {
	out     *countWriter
	key     *Key
	object  string // the name it is stored as, bound into a sealed index
	hdr     header
	entries []Entry
	names   map[string]bool
	enc     *zstd.Encoder
	dec     *zstd.Decoder
	s2dec   *s2.Reader
	hash    *asyncw.Writer // checksum and tap on another core
	chunk   []byte         // pending chunk payload
	sealed  []byte         // scratch for sealing
	err     error          // sticky: a failed Add leaves the bundle unusable
	closed  bool
	created time.Time
	tap     func(name string) io.Writer
	peek    *bufio.Reader
}

type countWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// NewWriter starts a bundle on w and writes its header. object is the
// name the bundle is stored as: a sealed bundle opens only under it. key
// may be nil for a bundle that is not encrypted. Its files' checksums are
// SHA-256.
func NewWriter(w io.Writer, object string, key *Key) (*Writer, error) {
	return NewWriterWith(w, object, key, checksum.SHA256)
}

// NewWriterWith is NewWriter with the algorithm of the files' checksums:
// every sum given to or computed by the Writer is one of sums.
func NewWriterWith(w io.Writer, object string, key *Key, sums checksum.Algorithm) (*Writer, error) {
	if !sums.Valid() {
		return nil, fmt.Errorf("bundle writer: unknown checksum %v", sums)
	}
	bw := &Writer{out: &countWriter{w: bufio.NewWriterSize(w, 256<<10)}, key: key, object: object, names: map[string]bool{},
		chunk: make([]byte, 0, ChunkSize)}
	bw.hdr.sums = sums
	if _, err := rand.Read(bw.hdr.id[:]); err != nil {
		return nil, err
	}
	if key != nil {
		bw.hdr.encrypted, bw.hdr.keyCheck = true, key.check
		bw.sealed = make([]byte, 0, ChunkSize+key.aead.Overhead())
	}
	bw.enc = zpool.GetEncoder(nil)
	var err error
	if bw.dec, err = zpool.GetDecoder(nil); err != nil {
		return nil, err
	}
	bw.hash = getHasher()
	if _, err := bw.out.Write(bw.hdr.marshal()); err != nil {
		return nil, fmt.Errorf("write bundle header: %w", err)
	}
	return bw, nil
}

// Add appends the file name, reading its content from r encoded as codec. It
// returns the file's entry: raw size and checksum are computed here from the
// raw bytes (for Zstd input, by decompressing), so the caller can compare
// them with what the sender claimed. Names must be unique in a bundle.
func (w *Writer) Add(name string, codec Codec, r io.Reader) (Entry, error) {
	return w.addChecked(name, codec, r, nil)
}

// addChecked checks the writer's state and the name, then adds the file;
// claim is AddZstd's.
func (w *Writer) addChecked(name string, codec Codec, r io.Reader, claim func() (int64, checksum.Sum)) (Entry, error) {
	return w.addFrame(name, func() (Entry, error) { return w.add(name, codec, r, claim) })
}

// addFrame checks the writer's state and the name, then adds the file
// with add; an error there fails the writer for good.
func (w *Writer) addFrame(name string, add func() (Entry, error)) (Entry, error) {
	if w.err != nil {
		return Entry{}, w.err
	}
	if w.closed {
		return Entry{}, errors.New("bundle writer closed")
	}
	if name == "" || len(name) > maxName || w.names[name] {
		return Entry{}, fmt.Errorf("add %q to bundle: empty, too long or repeated name", name)
	}
	e, err := add()
	if err != nil {
		w.err = fmt.Errorf("add %s to bundle: %w", name, err)
		return Entry{}, w.err
	}
	w.names[name] = true
	w.entries = append(w.entries, e)
	return e, nil
}

// AddCompressed appends the file name given as a Zstd or S2 stream, as Add
// does, when its sender already computed the raw content's checksum, with
// the bundle's algorithm: claim returns it (and the raw size) once r is
// drained. If the stream carries checksums of the raw bytes (a zstd
// frame's xxhash64, an S2 block's CRC-32C, computed by the sender's
// encoder over the bytes it summed), decompressing checks them, which
// proves the raw content is what the sender summed: the entry then takes
// the claimed sum instead of computing it again. Without them it is
// computed, as Add does. The caller still compares the entry with what the
// sender claimed.
func (w *Writer) AddCompressed(name string, codec Codec, r io.Reader, claim func() (int64, checksum.Sum)) (Entry, error) {
	switch {
	case claim == nil:
		return Entry{}, errors.New("bundle AddCompressed: no claim")
	case codec != Zstd && codec != S2:
		return Entry{}, fmt.Errorf("bundle AddCompressed: codec %d is not a compressed one", codec)
	}
	return w.addChecked(name, codec, r, claim)
}

// AddEncoded appends the file name given whole as one Zstd or S2 stream,
// with the raw size and checksum its caller computed from the raw bytes it
// compressed: nothing is decompressed or checked, so only a writer that
// read the file itself may call it (the guest bundling its own WAL). The
// tap does not see the file.
func (w *Writer) AddEncoded(name string, codec Codec, frame []byte, rawSize int64, sum checksum.Sum) (Entry, error) {
	switch {
	case codec != Zstd && codec != S2:
		return Entry{}, fmt.Errorf("bundle AddEncoded: codec %d is not a compressed one", codec)
	case sum.Algorithm != w.hdr.sums:
		return Entry{}, fmt.Errorf("bundle AddEncoded: a %v checksum for a bundle of %v ones", sum.Algorithm, w.hdr.sums)
	}
	return w.addFrame(name, func() (Entry, error) {
		e, cw, err := w.beginFrame(name, codec)
		if err == nil {
			_, err = cw.Write(frame)
		}
		if err == nil {
			err = w.endFrame(&e, cw, rawSize, sum)
		}
		return e, err
	})
}

// beginFrame writes the header of a frame compressed with codec and
// returns its entry, started, and the writer of its payload.
func (w *Writer) beginFrame(name string, codec Codec) (Entry, *chunkWriter, error) {
	e := Entry{Name: name, Offset: w.out.n, Codec: codec}
	var nonce [12]byte
	if w.key != nil {
		if _, err := rand.Read(nonce[:]); err != nil {
			return e, nil, err
		}
	}
	fh := frameHeader(name, codec, nonce)
	if _, err := w.out.Write(fh); err != nil {
		return e, nil, err
	}
	return e, &chunkWriter{w: w, fh: fh, nonce: nonce}, nil
}

// endFrame ends the payload and writes the footer (raw size and checksum,
// sealed with a key), completing e.
func (w *Writer) endFrame(e *Entry, cw *chunkWriter, raw int64, sum checksum.Sum) error {
	if err := cw.finish(); err != nil {
		return err
	}
	e.RawSize, e.Sum = raw, sum
	footer := make([]byte, 0, footerSize)
	footer = binary.BigEndian.AppendUint64(footer, uint64(raw))
	footer = append(footer, sum.Digest[:]...)
	if w.key != nil {
		footer = w.key.aead.Seal(nil, chunkNonce(cw.nonce, footerChunk), footer, chunkAAD(w.hdr.id, cw.fh, footerChunk, true))
	}
	if _, err := w.out.Write(footer); err != nil {
		return err
	}
	e.Length = w.out.n - e.Offset
	return nil
}

func (w *Writer) add(name string, codec Codec, r io.Reader, claim func() (int64, checksum.Sum)) (Entry, error) {
	stored := codec
	if codec == Raw {
		stored = Zstd
	}
	e, cw, err := w.beginFrame(name, stored)
	if err != nil {
		return e, err
	}
	sum := checksum.New(w.hdr.sums)
	var tap io.Writer
	if w.tap != nil {
		tap = w.tap(name)
	}
	trusted := codec == S2 && claim != nil // every S2 block carries its CRC
	if codec == Zstd && claim != nil {
		if w.peek == nil {
			w.peek = bufio.NewReaderSize(r, 4096)
		} else {
			w.peek.Reset(r)
		}
		r = w.peek
		trusted = frameHasChecksum(w.peek)
	}
	var rawSink io.Writer = sum
	switch {
	case trusted && tap != nil:
		rawSink = tap
	case trusted:
		rawSink = io.Discard
	case tap != nil:
		rawSink = io.MultiWriter(sum, tap)
	}
	var raw int64
	switch codec {
	case Raw:
		w.enc.Reset(cw)
		w.hash.Reset(rawSink)
		n, err := io.Copy(io.MultiWriter(w.enc, w.hash), r)
		if herr := w.hash.Close(); err == nil {
			err = herr
		}
		if err != nil {
			return e, err
		}
		if err := w.enc.Close(); err != nil {
			return e, err
		}
		raw = n
	case Zstd, S2:
		// Store the compressed bytes as they come, and decompress them on
		// the way to learn the raw size and checksum.
		var dec io.Reader
		if codec == S2 {
			if w.s2dec == nil {
				w.s2dec = zpool.GetS2Reader(nil)
			}
			w.s2dec.Reset(io.TeeReader(r, cw))
			dec = w.s2dec
		} else {
			if err := w.dec.Reset(io.TeeReader(r, cw)); err != nil {
				return e, err
			}
			dec = w.dec
		}
		var n int64
		var err error
		if rawSink == io.Discard { // trusted, and no tap: only the stream's checksums to check
			n, err = io.Copy(io.Discard, dec)
		} else {
			w.hash.Reset(rawSink)
			n, err = io.Copy(w.hash, dec)
			if herr := w.hash.Close(); err == nil {
				err = herr
			}
		}
		if err != nil {
			return e, fmt.Errorf("decompress: %w", err)
		}
		raw = n
	default:
		return e, fmt.Errorf("unknown codec %d", codec)
	}
	got := sum.Sum()
	if trusted {
		if _, got = claim(); got.Algorithm != w.hdr.sums {
			return e, fmt.Errorf("the sender's checksum is %v, the bundle's %v", got.Algorithm, w.hdr.sums)
		}
	}
	return e, w.endFrame(&e, cw, raw, got)
}

// chunkWriter cuts a frame's payload into length-prefixed chunks, sealing
// each when the bundle is encrypted. It holds one chunk back so the last one
// can be marked final.
type chunkWriter struct {
	w     *Writer
	fh    []byte
	nonce [12]byte
	n     uint32 // chunks emitted
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if len(c.w.chunk) == ChunkSize {
			if err := c.emit(false); err != nil {
				return 0, err
			}
		}
		k := copy(c.w.chunk[len(c.w.chunk):ChunkSize], p)
		c.w.chunk = c.w.chunk[:len(c.w.chunk)+k]
		p = p[k:]
	}
	return total, nil
}

func (c *chunkWriter) emit(final bool) error {
	data := c.w.chunk
	if c.w.key != nil {
		data = c.w.key.aead.Seal(c.w.sealed[:0], chunkNonce(c.nonce, c.n), data, chunkAAD(c.w.hdr.id, c.fh, c.n, final))
	}
	word := uint32(len(data))
	if final {
		word |= finalBit
	}
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], word)
	if _, err := c.w.out.Write(l[:]); err != nil {
		return err
	}
	if _, err := c.w.out.Write(data); err != nil {
		return err
	}
	if c.w.key == nil {
		// Without GCM, a CRC guards the stored bytes: a flip in a part of
		// the zstd stream that decodes the same would pass the checksum.
		crc := crc32.Update(crc32.Checksum(l[:], castagnoli), castagnoli, data)
		if _, err := c.w.out.Write(binary.BigEndian.AppendUint32(nil, crc)); err != nil {
			return err
		}
	}
	c.w.chunk = c.w.chunk[:0]
	c.n++
	return nil
}

// finish emits the last chunk, marked final even when empty so a reader can
// tell a whole frame from a cut one, and the zero-length terminator.
func (c *chunkWriter) finish() error {
	if err := c.emit(true); err != nil {
		return err
	}
	_, err := c.w.out.Write([]byte{0, 0, 0, 0})
	return err
}

// SetTap makes every later Add also write the file's raw bytes to the
// writer fn returns for its name (nil: none), for callers that learn
// something from the content as it passes. A tap's write error fails that
// Add.
func (w *Writer) SetTap(fn func(name string) io.Writer) { w.tap = fn }

// SetMeta records meta, a JSON value, with the file name already added; it
// is kept in the index (Entry.Meta) and read back by Reader.Entries.
func (w *Writer) SetMeta(name string, meta []byte) error {
	if !json.Valid(meta) {
		return fmt.Errorf("meta of %s: not JSON", name)
	}
	for i := range w.entries {
		if w.entries[i].Name == name {
			w.entries[i].Meta = append(json.RawMessage(nil), meta...)
			return nil
		}
	}
	return fmt.Errorf("meta of %s: no such file in the bundle", name)
}

// SetCreated records when the bundle was written, in its index, so
// retention can tell its age without relying on the storage's timestamps.
func (w *Writer) SetCreated(t time.Time) { w.created = t }

// Close writes the index and the trailer and flushes. It returns the
// entries in bundle order. The bundle is complete only once Close returns
// nil; the underlying writer is not closed.
func (w *Writer) Close() ([]Entry, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.closed {
		return nil, errors.New("bundle writer closed")
	}
	w.closed = true
	idx, err := encodeIndex(w.entries, w.created)
	if err != nil {
		return nil, err
	}
	if w.key != nil {
		var nonce [12]byte
		if _, err := rand.Read(nonce[:]); err != nil {
			return nil, err
		}
		idx = w.key.aead.Seal(nonce[:], nonce[:], idx, indexAAD(w.hdr.id, w.object))
	}
	if len(idx) > MaxIndex {
		w.err = fmt.Errorf("close bundle: %w: index of %d bytes for %d files, at most %d", repository.ErrTooLarge, len(idx), len(w.entries), MaxIndex)
		return nil, w.err
	}
	t := trailer{indexOffset: w.out.n, indexLength: int64(len(idx))}
	sum := sha256.New()
	sum.Write(w.hdr.marshal())
	sum.Write(idx)
	copy(t.sum[:], sum.Sum(nil))
	if _, err := w.out.Write(idx); err != nil {
		return nil, err
	}
	if _, err := w.out.Write(t.marshal()); err != nil {
		return nil, err
	}
	if err := w.out.w.Flush(); err != nil {
		return nil, err
	}
	zpool.PutEncoder(w.enc)
	zpool.PutDecoder(w.dec)
	if w.s2dec != nil {
		zpool.PutS2Reader(w.s2dec)
	}
	putHasher(w.hash)
	w.enc, w.dec, w.s2dec, w.hash = nil, nil, nil, nil
	return w.entries, nil
}

// frameHasChecksum tells whether the zstd stream in r starts with a frame
// whose header sets Content_Checksum_flag (RFC 8878, 3.1.1.1.1), without
// consuming anything.
func frameHasChecksum(r *bufio.Reader) bool {
	b, err := r.Peek(5)
	if err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(b) == 0xFD2FB528 && b[4]&0x04 != 0
}
