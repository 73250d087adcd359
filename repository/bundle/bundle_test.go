package bundle_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/repository/memory"
)

// walLike returns n bytes that compress somewhat, like WAL: runs of
// repeated page-ish content mixed with noise.
func walLike(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := 0; i < n; i += 64 {
		end := min(i+64, n)
		if r.IntN(3) == 0 {
			for j := i; j < end; j++ {
				b[j] = byte(r.Uint32())
			}
		} else {
			for j := i; j < end; j++ {
				b[j] = byte(j / 512)
			}
		}
	}
	return b
}

func segName(i int) string { return fmt.Sprintf("0000000100000000%08X", i) }

type file struct {
	name string
	data []byte
}

func key(t testing.TB, b byte) *bundle.Key {
	t.Helper()
	k, err := bundle.NewKey(bytes.Repeat([]byte{b}, bundle.KeySize))
	require.NoError(t, err)
	return k
}

func write(t testing.TB, files []file, k *bundle.Key, codec bundle.Codec) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := bundle.NewWriter(&buf, "b", k)
	require.NoError(t, err)
	for _, f := range files {
		in := io.Reader(bytes.NewReader(f.data))
		if codec == bundle.Zstd {
			enc, err := zstd.NewWriter(nil)
			require.NoError(t, err)
			in = bytes.NewReader(enc.EncodeAll(f.data, nil))
		}
		e, err := w.Add(f.name, codec, in)
		require.NoError(t, err)
		assert.Equal(t, int64(len(f.data)), e.RawSize)
		assert.Equal(t, sha(f.data), e.Sum)
	}
	_, err = w.Close()
	require.NoError(t, err)
	return buf.Bytes()
}

func store(t testing.TB, data []byte) *memory.Repo {
	t.Helper()
	repo := memory.New()
	require.NoError(t, repo.Put(context.Background(), "b", bytes.NewReader(data)))
	return repo
}

func readAll(t testing.TB, repo bundle.Getter, size int64, k *bundle.Key, names []string) (map[string][]byte, error) {
	t.Helper()
	r, err := bundle.Open(context.Background(), repo, "b", size, k)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, n := range names {
		var buf bytes.Buffer
		if _, err := r.WriteFile(context.Background(), n, &buf); err != nil {
			return nil, err
		}
		out[n] = buf.Bytes()
	}
	return out, nil
}

func TestRoundTrip(t *testing.T) {
	files := []file{
		{segName(1), walLike(1, 16<<20)},
		{segName(2), nil},
		{segName(3), walLike(3, bundle.ChunkSize)},
		{"00000002.history", []byte("1\t0/3000000\tno recovery target specified\n")},
		{segName(4) + ".partial", walLike(4, bundle.ChunkSize+1)},
	}
	for _, tc := range []struct {
		name  string
		key   *bundle.Key
		codec bundle.Codec
	}{
		{"plain/raw", nil, bundle.Raw},
		{"plain/zstd", nil, bundle.Zstd},
		{"encrypted/raw", key(t, 7), bundle.Raw},
		{"encrypted/zstd", key(t, 7), bundle.Zstd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := write(t, files, tc.key, tc.codec)
			assert.Less(t, len(data), 20<<20, "WAL-like data is compressed")
			names := make([]string, len(files))
			for i, f := range files {
				names[i] = f.name
			}
			got, err := readAll(t, store(t, data), int64(len(data)), tc.key, names)
			require.NoError(t, err)
			for _, f := range files {
				assert.True(t, bytes.Equal(f.data, got[f.name]), "%s is byte-identical", f.name)
			}
		})
	}
}

// Every single flipped bit is caught, and inside a frame the error names
// the file.
func TestBitFlipDetected(t *testing.T) {
	files := []file{{segName(1), walLike(1, 3000)}, {segName(2), walLike(2, 5000)}, {segName(3), walLike(3, 100)}}
	names := []string{segName(1), segName(2), segName(3)}
	for _, k := range []*bundle.Key{nil, key(t, 9)} {
		t.Run(fmt.Sprintf("encrypted=%v", k != nil), func(t *testing.T) {
			orig := write(t, files, k, bundle.Raw)
			r, err := bundle.Open(context.Background(), store(t, orig), "b", int64(len(orig)), k)
			require.NoError(t, err)
			entries := r.Entries()
			for pos := 0; pos < len(orig); pos++ {
				for _, bit := range []byte{0x01, 0x80} {
					data := bytes.Clone(orig)
					data[pos] ^= bit
					_, err := readAll(t, store(t, data), int64(len(data)), k, names)
					require.Error(t, err, "flip at byte %d bit %#x went unnoticed", pos, bit)
					require.ErrorIs(t, err, bundle.ErrCorrupt, "byte %d", pos)
					for _, e := range entries {
						if int64(pos) >= e.Offset && int64(pos) < e.Offset+e.Length {
							var ce *bundle.CorruptError
							require.ErrorAs(t, err, &ce, "byte %d", pos)
							assert.Equal(t, e.Name, ce.File, "flip at byte %d names its file", pos)
							assert.Contains(t, err.Error(), e.Name)
						}
					}
				}
			}
		})
	}
}

// WriteCompressed hands over the stored zstd stream, which decompresses
// to the file and matches its entry's size and checksum; a flipped bit
// anywhere in a frame is caught by the chunk checks alone, naming the file.
// AddZstd takes the sender's SHA-256 when the frame's content checksum
// proves the raw bytes, computes it when the frame has none, and refuses a
// stream whose content does not match its checksum.
func TestAddCompressedZstd(t *testing.T) {
	data := walLike(1, 200000)
	sum := sha(data)
	claim := func() (int64, checksum.Sum) { return int64(len(data)), sum }
	compress := func(crc bool) []byte {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(crc))
		require.NoError(t, err)
		return enc.EncodeAll(data, nil)
	}
	add := func(stream []byte, claim func() (int64, checksum.Sum)) (bundle.Entry, error) {
		w, err := bundle.NewWriter(io.Discard, "b", nil)
		require.NoError(t, err)
		return w.AddCompressed(segName(1), bundle.Zstd, bytes.NewReader(stream), claim)
	}

	e, err := add(compress(true), claim)
	require.NoError(t, err)
	assert.Equal(t, sum, e.Sum)
	assert.Equal(t, int64(len(data)), e.RawSize)

	// No content checksum: the SHA-256 is computed, so a wrong claim shows.
	wrong := func() (int64, checksum.Sum) { return int64(len(data)), checksum.Sum{Digest: [32]byte{1}} }
	e, err = add(compress(false), wrong)
	require.NoError(t, err)
	assert.Equal(t, sum, e.Sum, "computed, not claimed")

	// Content changed after the encoder summed it: the checksum fails.
	stream := compress(true)
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	other := bytes.Clone(data)
	other[1000] ^= 1
	forged := enc.EncodeAll(other, nil)
	copy(forged[len(forged)-4:], stream[len(stream)-4:]) // the original's checksum
	_, err = add(forged, claim)
	require.ErrorContains(t, err, "decompress")

	_, err = add(stream, nil)
	require.ErrorContains(t, err, "no claim")
}

func TestWriteCompressed(t *testing.T) {
	ctx := context.Background()
	files := []file{{segName(1), walLike(1, 3*bundle.ChunkSize+5)}, {segName(2), nil}, {segName(3), walLike(3, 5000)}}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(bundle.MaxWindow))
	require.NoError(t, err)
	for _, k := range []*bundle.Key{nil, key(t, 9)} {
		t.Run(fmt.Sprintf("encrypted=%v", k != nil), func(t *testing.T) {
			orig := write(t, files, k, bundle.Raw)
			r, err := bundle.Open(ctx, store(t, orig), "b", int64(len(orig)), k)
			require.NoError(t, err)
			for _, f := range files {
				var buf bytes.Buffer
				e, err := r.WriteCompressed(ctx, f.name, &buf)
				require.NoError(t, err)
				raw, err := dec.DecodeAll(buf.Bytes(), nil)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(f.data, raw), f.name)
				assert.Equal(t, int64(len(raw)), e.RawSize)
				assert.Equal(t, sha(raw), e.Sum)
			}
			small := write(t, files[1:], k, bundle.Raw)
			for _, e := range func() []bundle.Entry {
				r, err := bundle.Open(ctx, store(t, small), "b", int64(len(small)), k)
				require.NoError(t, err)
				return r.Entries()
			}() {
				for pos := e.Offset; pos < e.Offset+e.Length; pos++ {
					data := bytes.Clone(small)
					data[pos] ^= 0x10
					r, err := bundle.Open(ctx, store(t, data), "b", int64(len(data)), k)
					require.NoError(t, err, "frames are not read at open")
					_, err = r.WriteCompressed(ctx, e.Name, io.Discard)
					var ce *bundle.CorruptError
					require.ErrorAs(t, err, &ce, "flip at byte %d went unnoticed", pos)
					assert.Equal(t, e.Name, ce.File)
				}
			}
		})
	}
}

func TestKeys(t *testing.T) {
	files := []file{{segName(1), walLike(1, 1000)}}
	data := write(t, files, key(t, 1), bundle.Raw)
	repo := store(t, data)
	_, err := readAll(t, repo, int64(len(data)), nil, []string{segName(1)})
	require.ErrorIs(t, err, bundle.ErrKeyRequired)
	_, err = readAll(t, repo, int64(len(data)), key(t, 2), []string{segName(1)})
	require.ErrorIs(t, err, bundle.ErrWrongKey)
	// Sealed for "b": at any other name it does not open.
	moved := memory.New()
	require.NoError(t, moved.Put(context.Background(), "other/instance/b", bytes.NewReader(data)))
	_, err = bundle.Open(context.Background(), moved, "other/instance/b", int64(len(data)), key(t, 1))
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	assert.ErrorContains(t, err, "another object name")
	// A sealed bundle of format version 1 is bound to no name: refused.
	old := bytes.Clone(data)
	old[8] = 1
	end := len(old) - 56
	idxOff, idxLen := binary.BigEndian.Uint64(old[end:]), binary.BigEndian.Uint64(old[end+8:])
	sum := sha256.Sum256(append(bytes.Clone(old[:32]), old[idxOff:idxOff+idxLen]...))
	copy(old[end+16:], sum[:])
	_, err = readAll(t, store(t, old), int64(len(old)), key(t, 1), []string{segName(1)})
	require.ErrorIs(t, err, bundle.ErrUnbound)
	// A plain bundle where a sealed one is expected: forged WAL, refused.
	plain := write(t, files, nil, bundle.Raw)
	_, err = readAll(t, store(t, plain), int64(len(plain)), key(t, 1), []string{segName(1)})
	require.ErrorIs(t, err, bundle.ErrNotEncrypted)
	_, err = readAll(t, store(t, plain), int64(len(plain)), nil, []string{segName(1)})
	require.NoError(t, err, "without a key, plain bundles are read")
	_, err = bundle.NewKey([]byte("short"))
	require.ErrorContains(t, err, "32 bytes")
	assert.NotContains(t, key(t, 0x41).String(), strings.Repeat("41", 8), "no key bytes in String")
	assert.False(t, bytes.Contains(data, bytes.Repeat([]byte{1}, bundle.KeySize)), "the key is not stored")
}

// countingGetter counts the bytes a reader pulls.
type countingGetter struct {
	bundle.Getter
	n atomic.Int64
}

func (c *countingGetter) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	rc, err := c.Getter.Get(ctx, name, off, n)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(rc, writerFunc(func(p []byte) { c.n.Add(int64(len(p))) })), rc}, nil
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestOneSegmentReadsOnlyItsFrame(t *testing.T) {
	var files []file
	for i := 1; i <= 64; i++ {
		files = append(files, file{segName(i), walLike(uint64(i), 256<<10)})
	}
	data := write(t, files, key(t, 3), bundle.Raw)
	cg := &countingGetter{Getter: store(t, data)}
	ctx := context.Background()
	r, err := bundle.Open(ctx, cg, "b", int64(len(data)), key(t, 3))
	require.NoError(t, err)
	opened := cg.n.Load()
	var total int64
	for _, e := range r.Entries() {
		total += e.Length
	}
	indexLen := int64(len(data)) - total - 32 - 56
	assert.Equal(t, 32+56+indexLen, opened, "open reads header, trailer and index only")

	e, ok := r.Entry(segName(40))
	require.True(t, ok)
	var buf bytes.Buffer
	_, err = r.WriteFile(ctx, segName(40), &buf)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(files[39].data, buf.Bytes()))
	assert.Equal(t, e.Length, cg.n.Load()-opened, "one segment costs exactly its frame")
	assert.Less(t, e.Length*10, int64(len(data)), "and that is a small part of the bundle")

	_, err = r.WriteFile(ctx, segName(99), &buf)
	require.ErrorIs(t, err, bundle.ErrNoSuchFile)
}

func TestWriterRefusesBadInput(t *testing.T) {
	w, err := bundle.NewWriter(io.Discard, "b", nil)
	require.NoError(t, err)
	_, err = w.Add("", bundle.Raw, strings.NewReader("x"))
	require.Error(t, err)
	_, err = w.Add("a", bundle.Raw, strings.NewReader("x"))
	require.NoError(t, err)
	_, err = w.Add("a", bundle.Raw, strings.NewReader("x"))
	require.ErrorContains(t, err, "repeated")

	w, err = bundle.NewWriter(io.Discard, "b", nil)
	require.NoError(t, err)
	_, err = w.Add("b", bundle.Zstd, strings.NewReader("not zstd at all"))
	require.Error(t, err, "compressed input that does not decompress is refused")
	_, err = w.Close()
	require.Error(t, err, "a failed Add poisons the bundle")
}

func TestTruncatedBundle(t *testing.T) {
	data := write(t, []file{{segName(1), walLike(1, 5000)}}, nil, bundle.Raw)
	for _, n := range []int{0, 10, 40, len(data) / 2, len(data) - 1} {
		_, err := readAll(t, store(t, data[:n]), int64(n), nil, []string{segName(1)})
		require.ErrorIs(t, err, bundle.ErrCorrupt, "truncated to %d", n)
	}
}

func TestVerify(t *testing.T) {
	files := []file{{segName(1), walLike(1, 5000)}, {segName(2), walLike(2, 7000)}}
	data := write(t, files, nil, bundle.Raw)
	repo := store(t, data)
	want := map[string]checksum.Sum{segName(1): sha(files[0].data), segName(2): sha(files[1].data)}
	ctx := context.Background()
	require.NoError(t, bundle.Verify(ctx, repo, "b", int64(len(data)), nil, want))

	wrong := map[string]checksum.Sum{segName(1): want[segName(1)], segName(2): {Digest: [32]byte{1}}}
	err := bundle.Verify(ctx, repo, "b", int64(len(data)), nil, wrong)
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	require.ErrorContains(t, err, segName(2), "the mismatching segment is named")

	delete(want, segName(2))
	require.ErrorContains(t, bundle.Verify(ctx, repo, "b", int64(len(data)), nil, want), "holds 2 files")

	flipped := bytes.Clone(data)
	flipped[100] ^= 1
	repo2 := store(t, flipped)
	want[segName(2)] = sha(files[1].data)
	require.ErrorIs(t, bundle.Verify(ctx, repo2, "b", int64(len(flipped)), nil, want), bundle.ErrCorrupt)
}

// The ship-time read-back: the stored object must be byte for byte what
// was written, whatever byte differs, and its index must list the files
// wanted.
func TestVerifyStored(t *testing.T) {
	files := []file{{segName(1), walLike(1, 5000)}, {segName(2), walLike(2, 7000)}}
	data := write(t, files, nil, bundle.Raw)
	sum := sha(data)
	want := map[string]checksum.Sum{segName(1): sha(files[0].data), segName(2): sha(files[1].data)}
	ctx := context.Background()
	size := int64(len(data))
	require.NoError(t, bundle.VerifyStored(ctx, store(t, data), "b", size, nil, want, sum))
	xsum := checksum.Of(checksum.XXH3, data) // what the host sums what it writes with
	require.NoError(t, bundle.VerifyStored(ctx, store(t, data), "b", size, nil, want, xsum))

	for _, at := range []int{40, len(data) / 2, len(data) - 200} {
		flipped := bytes.Clone(data)
		flipped[at] ^= 0x10
		for _, s := range []checksum.Sum{sum, xsum} {
			err := bundle.VerifyStored(ctx, store(t, flipped), "b", size, nil, want, s)
			require.ErrorIs(t, err, bundle.ErrCorrupt, "byte %d of %d flipped, %v", at, len(data), s.Algorithm)
		}
	}
	wrong := map[string]checksum.Sum{segName(1): want[segName(1)], segName(2): {Digest: [32]byte{1}}}
	require.ErrorContains(t, bundle.VerifyStored(ctx, store(t, data), "b", size, nil, wrong, sum), segName(2))
	delete(want, segName(2))
	require.ErrorContains(t, bundle.VerifyStored(ctx, store(t, data), "b", size, nil, want, sum), "holds 2 files")
}

func TestCreatedTime(t *testing.T) {
	ctx := context.Background()
	for _, k := range []*bundle.Key{nil, key(t, 7)} {
		repo := memory.New()
		at := time.Date(2026, 11, 25, 22, 0, 0, 123, time.UTC)
		for name, created := range map[string]time.Time{"with": at, "without": {}} {
			var buf bytes.Buffer
			w, err := bundle.NewWriter(&buf, name, k)
			require.NoError(t, err)
			_, err = w.Add("000000010000000000000001", bundle.Raw, strings.NewReader("x"))
			require.NoError(t, err)
			w.SetCreated(created)
			_, err = w.Close()
			require.NoError(t, err)
			size := int64(buf.Len())
			require.NoError(t, repo.Put(ctx, name, &buf))
			r, err := bundle.Open(ctx, repo, name, size, k)
			require.NoError(t, err)
			assert.True(t, created.Equal(r.Created()), "%s: %v", name, r.Created())
		}
	}
}

// A tap sees each file's raw bytes, raw or zstd input, and meta set after
// Add comes back from the index, encrypted or not.
func TestTapAndMeta(t *testing.T) {
	ctx := context.Background()
	for _, k := range []*bundle.Key{nil, key(t, 9)} {
		for _, codec := range []bundle.Codec{bundle.Raw, bundle.Zstd, bundle.S2} {
			repo := memory.New()
			var buf bytes.Buffer
			w, err := bundle.NewWriter(&buf, "b", k)
			require.NoError(t, err)
			taps := map[string]*bytes.Buffer{}
			w.SetTap(func(name string) io.Writer {
				if name == "skip" {
					return nil
				}
				taps[name] = &bytes.Buffer{}
				return taps[name]
			})
			for _, f := range []file{{"a", []byte("alpha")}, {"skip", []byte("beta")}} {
				in := bytes.NewReader(f.data)
				var r io.Reader = in
				switch codec {
				case bundle.Zstd:
					var z bytes.Buffer
					enc, _ := zstd.NewWriter(&z)
					_, _ = enc.Write(f.data)
					enc.Close()
					r = &z
				case bundle.S2:
					r = bytes.NewReader(s2Stream(t, f.data, 0))
				}
				_, err := w.Add(f.name, codec, r)
				require.NoError(t, err)
			}
			require.NoError(t, w.SetMeta("a", []byte(`{"commits":3}`)))
			require.Error(t, w.SetMeta("a", []byte(`{not json`)))
			require.Error(t, w.SetMeta("nope", []byte(`{}`)))
			_, err = w.Close()
			require.NoError(t, err)
			assert.Equal(t, "alpha", taps["a"].String())
			assert.NotContains(t, taps, "skip")
			size := int64(buf.Len())
			require.NoError(t, repo.Put(ctx, "b", &buf))
			r, err := bundle.Open(ctx, repo, "b", size, k)
			require.NoError(t, err)
			e, ok := r.Entry("a")
			require.True(t, ok)
			assert.JSONEq(t, `{"commits":3}`, string(e.Meta))
			e, _ = r.Entry("skip")
			assert.Nil(t, e.Meta)
		}
	}
}

// rangeGetter serves a bundle's header and a forged trailer for an object
// of any size, counting the bytes it is asked for.
type rangeGetter struct {
	head, tail []byte
	size       int64
	asked      int64
}

func (g *rangeGetter) Get(_ context.Context, _ string, off, n int64) (io.ReadCloser, error) {
	g.asked += n
	switch {
	case off == 0 && n <= int64(len(g.head)):
		return io.NopCloser(bytes.NewReader(g.head[:n])), nil
	case off == g.size-int64(len(g.tail)):
		return io.NopCloser(bytes.NewReader(g.tail)), nil
	}
	return nil, fmt.Errorf("read of %d bytes at %d", n, off)
}

// A trailer that points at an index over MaxIndex is refused with
// repository.ErrTooLarge before the index is read: a hostile repository
// cannot make a reader allocate gigabytes.
func TestIndexOverTheLimitIsRefused(t *testing.T) {
	b := write(t, []file{{segName(1), walLike(1, 1000)}}, nil, bundle.Raw)
	trailer := append([]byte(nil), b[len(b)-56:]...)
	const index = bundle.MaxIndex + 1
	size := int64(32 + index + 56)
	binary.BigEndian.PutUint64(trailer[0:], 32)
	binary.BigEndian.PutUint64(trailer[8:], index)
	g := &rangeGetter{head: b[:32], tail: trailer, size: size}
	_, err := bundle.Open(context.Background(), g, "b", size, nil)
	require.ErrorIs(t, err, repository.ErrTooLarge)
	assert.Less(t, g.asked, int64(1024), "the index was not read")
}

// AddEncoded stores a frame its caller compressed and summed: it reads
// back byte-identical, and a wrong sum given with it is caught when the
// file is read.
func TestAddEncoded(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	data := walLike(5, 3<<20)
	for _, k := range []*bundle.Key{nil, key(t, 9)} {
		var buf bytes.Buffer
		w, err := bundle.NewWriter(&buf, "b", k)
		require.NoError(t, err)
		e, err := w.AddEncoded(segName(1), bundle.Zstd, enc.EncodeAll(data, nil), int64(len(data)), sha(data))
		require.NoError(t, err)
		assert.Equal(t, int64(len(data)), e.RawSize)
		bad := sha(data)
		bad.Digest[0] ^= 1
		_, err = w.AddEncoded(segName(2), bundle.Zstd, enc.EncodeAll(data, nil), int64(len(data)), bad)
		require.NoError(t, err)
		_, err = w.AddEncoded(segName(1), bundle.Zstd, nil, 0, checksum.Sum{})
		require.ErrorContains(t, err, "repeated name")

		buf.Reset()
		w, err = bundle.NewWriter(&buf, "b", k)
		require.NoError(t, err)
		_, err = w.AddEncoded(segName(1), bundle.Zstd, enc.EncodeAll(data, nil), int64(len(data)), sha(data))
		require.NoError(t, err)
		_, err = w.AddEncoded(segName(2), bundle.Zstd, enc.EncodeAll(data, nil), int64(len(data)), bad)
		require.NoError(t, err)
		_, err = w.Close()
		require.NoError(t, err)
		got, err := readAll(t, store(t, buf.Bytes()), int64(buf.Len()), k, []string{segName(1)})
		require.NoError(t, err)
		assert.Equal(t, data, got[segName(1)])
		_, err = readAll(t, store(t, buf.Bytes()), int64(buf.Len()), k, []string{segName(2)})
		require.ErrorIs(t, err, bundle.ErrCorrupt)
	}
}

// s2Stream returns data as an S2 stream of blocks of blockSize (0: 1 MiB).
func s2Stream(t testing.TB, data []byte, blockSize int) []byte {
	t.Helper()
	if blockSize == 0 {
		blockSize = 1 << 20
	}
	var buf bytes.Buffer
	w := s2.NewWriter(&buf, s2.WriterBlockSize(blockSize), s2.WriterConcurrency(1))
	_, err := w.Write(data)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// S2 frames, added from a stream with or without the sender's claim and
// whole as the guest adds them, are stored as S2, said so in the index,
// read back raw (WriteFile) or as the stored S2 stream (WriteCompressed),
// encrypted or not. A stream whose content does not match its blocks'
// CRCs, or with blocks larger than a reader accepts, is refused; a frame
// whose header says another codec than the index is corrupt.
func TestS2Frames(t *testing.T) {
	ctx := context.Background()
	files := []file{{segName(1), walLike(1, 3*bundle.ChunkSize+5)}, {segName(2), nil}, {segName(3), walLike(3, 5000)}}
	for _, k := range []*bundle.Key{nil, key(t, 9)} {
		t.Run(fmt.Sprintf("encrypted=%v", k != nil), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := bundle.NewWriter(&buf, "b", k)
			require.NoError(t, err)
			for i, f := range files {
				stream := s2Stream(t, f.data, 0)
				sum := sha(f.data)
				var e bundle.Entry
				switch i {
				case 0:
					e, err = w.Add(f.name, bundle.S2, bytes.NewReader(stream))
				case 1:
					e, err = w.AddCompressed(f.name, bundle.S2, bytes.NewReader(stream), func() (int64, checksum.Sum) { return int64(len(f.data)), sum })
				default:
					e, err = w.AddEncoded(f.name, bundle.S2, stream, int64(len(f.data)), sum)
				}
				require.NoError(t, err)
				assert.Equal(t, bundle.S2, e.Codec)
				assert.Equal(t, sum, e.Sum)
				assert.Equal(t, int64(len(f.data)), e.RawSize)
			}
			_, err = w.Close()
			require.NoError(t, err)
			b := buf.Bytes()
			r, err := bundle.Open(ctx, store(t, b), "b", int64(len(b)), k)
			require.NoError(t, err)
			for _, f := range files {
				var raw, stored bytes.Buffer
				e, err := r.WriteFile(ctx, f.name, &raw)
				require.NoError(t, err)
				assert.Equal(t, bundle.S2, e.Codec)
				assert.True(t, bytes.Equal(f.data, raw.Bytes()), f.name)
				_, err = r.WriteCompressed(ctx, f.name, &stored)
				require.NoError(t, err)
				got, err := io.ReadAll(s2.NewReader(&stored))
				require.NoError(t, err)
				assert.True(t, bytes.Equal(f.data, got), f.name)
			}
			require.NoError(t, bundle.Verify(ctx, store(t, b), "b", int64(len(b)), k, map[string]checksum.Sum{
				files[0].name: sha(files[0].data), files[1].name: sha(files[1].data), files[2].name: sha(files[2].data)}))
		})
	}

	data := walLike(5, 300000)
	sum := sha(data)
	claim := func() (int64, checksum.Sum) { return int64(len(data)), sum }
	add := func(stream []byte) error {
		w, err := bundle.NewWriter(io.Discard, "b", nil)
		require.NoError(t, err)
		_, err = w.AddCompressed(segName(1), bundle.S2, bytes.NewReader(stream), claim)
		return err
	}
	require.NoError(t, add(s2Stream(t, data, 0)))
	t.Run("content changed after the CRCs", func(t *testing.T) {
		stream := s2Stream(t, data, 0)
		other := s2Stream(t, append(bytes.Clone(data[:1000]), append([]byte{data[1000] ^ 1}, data[1001:]...)...), 0)
		// The first block's CRC (after the stream identifier and the
		// block's header) of the original, over the changed content.
		copy(other[14:18], stream[14:18])
		require.ErrorContains(t, add(other), "decompress")
	})
	t.Run("blocks over a reader's limit", func(t *testing.T) {
		big := walLike(6, 3<<20)
		sum := sha(big)
		w, err := bundle.NewWriter(io.Discard, "b", nil)
		require.NoError(t, err)
		_, err = w.AddCompressed(segName(1), bundle.S2, bytes.NewReader(s2Stream(t, big, 4<<20)), func() (int64, checksum.Sum) { return int64(len(big)), sum })
		require.ErrorContains(t, err, "decompress")
	})
	t.Run("frame codec differs from the index", func(t *testing.T) {
		b := write(t, files[2:], nil, bundle.Raw) // one zstd frame
		i := bytes.Index(b, []byte("FRM1"))
		require.Positive(t, i)
		b[i+4] = 2 // says S2 where the index says zstd
		r, err := bundle.Open(ctx, store(t, b), "b", int64(len(b)), nil)
		require.NoError(t, err, "the frame is not read until the file is")
		_, err = r.WriteFile(ctx, files[2].name, io.Discard)
		var ce *bundle.CorruptError
		require.ErrorAs(t, err, &ce)
		assert.Contains(t, ce.Reason, "frame header does not match the index")
	})
}

// The read-back's sum and size are the whole stream's, whatever the reads
// return at a time and across several buffers, and a failing read is
// reported, not taken for the end.
func TestReadBackHashesEveryByte(t *testing.T) {
	data := make([]byte, 9<<20+12345)
	rand.NewChaCha8([32]byte{1}).Read(data)
	for _, alg := range []checksum.Algorithm{checksum.SHA256, checksum.XXH3} {
		for name, r := range map[string]io.Reader{
			"whole":  bytes.NewReader(data),
			"halves": iotest.HalfReader(bytes.NewReader(data)),
		} {
			n, sum, err := bundle.ReadBack(r, alg)
			require.NoError(t, err, name)
			assert.Equal(t, int64(len(data)), n, name)
			assert.Equal(t, checksum.Of(alg, data), sum, name)
		}
		n, sum, err := bundle.ReadBack(bytes.NewReader(nil), alg)
		require.NoError(t, err)
		assert.Zero(t, n)
		assert.Equal(t, checksum.Of(alg, nil), sum)
	}
	broken := errors.New("connection lost")
	_, _, err := bundle.ReadBack(io.MultiReader(bytes.NewReader(data[:5<<20]), iotest.ErrReader(broken)), checksum.XXH3)
	assert.ErrorIs(t, err, broken)
}

// sha is the checksum of b in bundles of NewWriter.
func sha(b []byte) checksum.Sum { return checksum.Of(checksum.SHA256, b) }

// A bundle whose files sum with XXH3 (WAL, from this release on) says so
// in its header and index, and reading and verifying check its files with
// XXH3, sealed or not: a wrong sum shows, and sums of SHA-256 do not
// match. A writer refuses sums of the other algorithm. Bundles of SHA-256
// sums, every earlier release's, are what the tests above write and read.
func TestXXH3Bundles(t *testing.T) {
	ctx := context.Background()
	xx := func(b []byte) checksum.Sum { return checksum.Of(checksum.XXH3, b) }
	files := []file{{segName(1), walLike(1, 300000)}, {segName(2), walLike(2, 200000)}, {segName(3), walLike(3, 100000)}, {segName(4), walLike(4, 50000)}}
	crc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	require.NoError(t, err)
	for _, k := range []*bundle.Key{nil, key(t, 3)} {
		t.Run(fmt.Sprintf("encrypted=%v", k != nil), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := bundle.NewWriterWith(&buf, "b", k, checksum.XXH3)
			require.NoError(t, err)
			claim := func(f file) func() (int64, checksum.Sum) {
				return func() (int64, checksum.Sum) { return int64(len(f.data)), xx(f.data) }
			}
			var e bundle.Entry
			for i, f := range files {
				switch i {
				case 0: // summed by the writer
					e, err = w.Add(f.name, bundle.Raw, bytes.NewReader(f.data))
				case 1: // the sender's sum, proven by the frame's own checksum
					e, err = w.AddCompressed(f.name, bundle.Zstd, bytes.NewReader(crc.EncodeAll(f.data, nil)), claim(f))
				case 2: // the guest's own
					e, err = w.AddEncoded(f.name, bundle.Zstd, crc.EncodeAll(f.data, nil), int64(len(f.data)), xx(f.data))
				case 3: // a wrong one, caught when read
					bad := xx(f.data)
					bad.Digest[3] ^= 1
					e, err = w.AddEncoded(f.name, bundle.Zstd, crc.EncodeAll(f.data, nil), int64(len(f.data)), bad)
				}
				require.NoError(t, err, f.name)
				if i < 3 {
					assert.Equal(t, xx(f.data), e.Sum, f.name)
				}
			}
			_, err = w.Close()
			require.NoError(t, err)
			data := buf.Bytes()
			assert.Equal(t, byte(2), data[9]&2, "the header says XXH3")
			if k == nil {
				assert.Contains(t, string(data), `"xxh3":"`+xx(files[0].data).Hex()+`"`)
				assert.NotContains(t, string(data), `"sha256"`)
			}
			repo := store(t, data)
			r, err := bundle.Open(ctx, repo, "b", int64(len(data)), k)
			require.NoError(t, err)
			for i, e := range r.Entries()[:3] {
				assert.Equal(t, xx(files[i].data), e.Sum)
			}
			names := []string{segName(1), segName(2), segName(3)}
			got, err := readAll(t, repo, int64(len(data)), k, names)
			require.NoError(t, err)
			for _, f := range files[:3] {
				assert.Equal(t, f.data, got[f.name], f.name)
			}
			_, err = readAll(t, repo, int64(len(data)), k, []string{segName(4)})
			require.ErrorIs(t, err, bundle.ErrCorrupt)
			require.ErrorContains(t, err, "xxh3 checksum mismatch")

			want := map[string]checksum.Sum{}
			for _, e := range r.Entries() {
				want[e.Name] = e.Sum
			}
			require.NoError(t, bundle.VerifyIndex(ctx, repo, "b", int64(len(data)), k, want))
			want[segName(1)] = sha(files[0].data)
			require.ErrorIs(t, bundle.VerifyIndex(ctx, repo, "b", int64(len(data)), k, want), bundle.ErrCorrupt,
				"the SHA-256 of the same content is not its XXH3")
		})
	}

	f := files[0]
	w, err := bundle.NewWriterWith(io.Discard, "b", nil, checksum.XXH3)
	require.NoError(t, err)
	_, err = w.AddEncoded(f.name, bundle.Zstd, crc.EncodeAll(f.data, nil), int64(len(f.data)), sha(f.data))
	require.ErrorContains(t, err, "a sha256 checksum for a bundle of xxh3 ones")
	w, err = bundle.NewWriterWith(io.Discard, "b", nil, checksum.XXH3)
	require.NoError(t, err)
	_, err = w.AddCompressed(f.name, bundle.Zstd, bytes.NewReader(crc.EncodeAll(f.data, nil)),
		func() (int64, checksum.Sum) { return int64(len(f.data)), sha(f.data) })
	require.ErrorContains(t, err, "the sender's checksum is sha256, the bundle's xxh3")
	_, err = bundle.NewWriterWith(io.Discard, "b", nil, checksum.Algorithm(7))
	require.ErrorContains(t, err, "unknown checksum")
}
