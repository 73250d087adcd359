package walbackup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/walbackup"
)

var inst = repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 7}

func seg(tli, n int) string { return fmt.Sprintf("%08X%016X", tli, n) }

func fakeGuest(t *testing.T, files map[string][]byte) (*guesttest.Guest, guest.Runtime) {
	t.Helper()
	g := guesttest.NewGuest(guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: 7})
	for n, d := range files {
		g.AddWAL(n, d)
	}
	rt, err := guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g}).Deploy(context.Background(), guest.Target{Machine: "vm1"})
	require.NoError(t, err)
	return g, rt
}

// stored reads every bundle of inst's timelines tlis and returns each
// file's content, failing the test when a file is stored twice with two
// contents.
func stored(t testing.TB, repo repository.Repository, inst repository.Instance, tlis ...uint32) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, tli := range tlis {
		eachEntry(t, repo, inst, tli, func(r *bundle.Reader, e bundle.Entry) {
			var buf bytes.Buffer
			_, err := r.WriteFile(context.Background(), e.Name, &buf)
			require.NoError(t, err)
			if prev, ok := out[e.Name]; ok {
				require.Equal(t, prev, buf.Bytes(), "%s stored twice with different content", e.Name)
			}
			out[e.Name] = buf.Bytes()
		})
	}
	return out
}

// storedSums is stored by the bundles' indexes: each file's checksum, one
// per name, without reading the content.
func storedSums(t testing.TB, repo repository.Repository, inst repository.Instance, tli uint32) map[string]checksum.Sum {
	t.Helper()
	out := map[string]checksum.Sum{}
	eachEntry(t, repo, inst, tli, func(_ *bundle.Reader, e bundle.Entry) {
		if prev, ok := out[e.Name]; ok {
			require.Equal(t, prev, e.Sum, "%s stored twice with different content", e.Name)
		}
		out[e.Name] = e.Sum
	})
	return out
}

// eachEntry calls fn with every file in inst's bundles of timeline tli.
func eachEntry(t testing.TB, repo repository.Repository, inst repository.Instance, tli uint32, fn func(*bundle.Reader, bundle.Entry)) {
	t.Helper()
	ctx := context.Background()
	refs, err := repository.Bundles(ctx, repo, inst, tli)
	require.NoError(t, err)
	for _, ref := range refs {
		r, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, nil)
		require.NoError(t, err)
		for _, e := range r.Entries() {
			fn(r, e)
		}
	}
}

func TestShipOnce(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{
		seg(1, 3): bytes.Repeat([]byte("a"), 5000), seg(1, 4): bytes.Repeat([]byte("b"), 7000),
		seg(1, 5) + ".partial": []byte("partial"), "00000002.history": []byte("1\t0/5000000\tbefore 2026\n"),
		seg(2, 5): []byte("timeline two"),
	}
	g, rt := fakeGuest(t, files)
	repo := memory.New()
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	assert.Equal(t, 5, got.Files)
	assert.Equal(t, seg(1, 3), got.First)
	assert.Equal(t, seg(2, 5), got.Last)
	assert.Len(t, got.Objects, 3, "one bundle per timeline plus the history file")
	assert.Empty(t, g.Waiting(), "shipped files leave the guest")

	in := stored(t, repo, inst, 1, 2)
	for n, d := range files {
		if n == "00000002.history" {
			continue
		}
		assert.Equal(t, d, in[n], n)
	}
	rc, err := repo.Get(ctx, inst.HistoryName("00000002.history"), 0, -1)
	require.NoError(t, err)
	h, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, files["00000002.history"], h)

	again, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	assert.Zero(t, again.Files, "nothing waiting, nothing written")
	assert.Empty(t, again.Objects)
}

func TestShipOnceRepositoryDown(t *testing.T) {
	ctx := context.Background()
	g, rt := fakeGuest(t, map[string][]byte{seg(1, 1): []byte("one"), seg(1, 2): []byte("two")})
	repo := memory.New()
	down := errors.New("repository unreachable")
	repo.SetFault(func(op memory.Op, _ string) error {
		if op == memory.OpPut {
			return down
		}
		return nil
	})
	_, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.ErrorIs(t, err, down)
	assert.Len(t, g.Waiting(), 2, "nothing is deleted in the guest")

	repo.SetFault(nil)
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, got.Files)
	assert.Empty(t, g.Waiting())
}

// flipping stores every object with one byte changed in its middle, as a
// faulty disk or network might, without an error.
type flipping struct{ repository.Repository }

func (f flipping) Put(ctx context.Context, name string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	b[len(b)/2] ^= 1
	return f.Repository.Put(ctx, name, bytes.NewReader(b))
}

// A repository that stores other bytes than it was given fails the
// read-back: nothing is deleted in the guest.
func TestShipOnceReadBackCatchesCorruption(t *testing.T) {
	ctx := context.Background()
	g, rt := fakeGuest(t, map[string][]byte{seg(1, 1): bytes.Repeat([]byte("one"), 1000), seg(1, 2): []byte("two")})
	_, err := walbackup.ShipOnce(ctx, rt, flipping{memory.New()}, inst, walbackup.ShipOptions{})
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	assert.Len(t, g.Waiting(), 2, "nothing is deleted in the guest")
}

// The guest fails to delete after the bundle is stored: the files ship
// again next time, the bundles overlap, and every copy agrees.
func TestShipOnceRemoveFailsThenRetry(t *testing.T) {
	ctx := context.Background()
	g, rt := fakeGuest(t, map[string][]byte{seg(1, 1): []byte("one"), seg(1, 2): []byte("two")})
	repo := memory.New()
	failRemoves(g)
	_, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.Error(t, err)
	assert.Len(t, g.Waiting(), 2)
	g.SetFault(nil)
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, got.Files)
	assert.Empty(t, g.Waiting())
	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	assert.Len(t, refs, 1, "the retry compared the stored copies instead of storing them again")
	assert.Len(t, stored(t, repo, inst, 1), 2)
}

// failRemoves makes the guest fail to remove files, as if it went away
// after the bundle was stored; g.SetFault(nil) ends it.
func failRemoves(g *guesttest.Guest) {
	g.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpRemove {
			return errors.New("guest went away")
		}
		return nil
	})
}

func TestShipOnceHistoryConflict(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	require.NoError(t, repo.Put(ctx, inst.HistoryName("00000002.history"), bytes.NewReader([]byte("another branch"))))
	g, rt := fakeGuest(t, map[string][]byte{"00000002.history": []byte("1\t0/5000000\tthis branch\n"), seg(2, 5): []byte("x")})
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.ErrorIs(t, err, walbackup.ErrSplitBrain, "a split brain is refused")
	assert.Equal(t, 1, got.Files, "the segment shipped")
	assert.Empty(t, g.Waiting(), "the history file is kept aside, so shipping goes on")
	rc, err := repo.Get(ctx, inst.HistoryName("00000002.history"), 0, -1)
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, "another branch", string(b), "the stored history stays")
	_, err = repo.Stat(ctx, inst.ConflictName("00000002.history", xxh3Of("1\t0/5000000\tthis branch\n").Digest))
	require.NoError(t, err, "the guest's history is kept aside")
}

// A segment name the repository holds with other content (a split brain)
// is refused: the stored copy stays, the guest's is kept aside in the
// repository, verified, and leaves the guest; the rest of the batch ships;
// the error says what happened with both checksums.
func TestShipOnceSegmentSplitBrain(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	g, rt := fakeGuest(t, map[string][]byte{seg(1, 1): []byte("one"), seg(1, 2): []byte("two")})
	_, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	g.AddWAL(seg(1, 2), []byte("two, as the other primary wrote it"))
	g.AddWAL(seg(1, 3), []byte("three"))
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.ErrorIs(t, err, walbackup.ErrSplitBrain)
	assert.Contains(t, err.Error(), seg(1, 2))
	assert.Contains(t, err.Error(), xxh3Of("two").String(), "the stored copy's checksum")
	assert.Contains(t, err.Error(), "kept aside as")
	assert.Equal(t, 1, got.Files, "the rest of the batch shipped")
	assert.Empty(t, g.Waiting(), "the guest's copy is safe in the repository, so it left the guest")
	in := stored(t, repo, inst, 1)
	assert.Equal(t, []byte("two"), in[seg(1, 2)], "the stored copy stays")
	assert.Equal(t, []byte("three"), in[seg(1, 3)])
	aside := inst.ConflictName(seg(1, 2), xxh3Of("two, as the other primary wrote it").Digest)
	st, err := repo.Stat(ctx, aside)
	require.NoError(t, err)
	r, err := bundle.Open(ctx, repo, aside, st.Size, nil)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = r.WriteFile(ctx, seg(1, 2), &buf)
	require.NoError(t, err)
	assert.Equal(t, "two, as the other primary wrote it", buf.String())
}

func TestShipOnceEncrypted(t *testing.T) {
	ctx := context.Background()
	key, err := bundle.NewKey(bytes.Repeat([]byte{9}, bundle.KeySize))
	require.NoError(t, err)
	_, rt := fakeGuest(t, map[string][]byte{seg(1, 1): []byte("secret wal")})
	repo := memory.New()
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{Key: key})
	require.NoError(t, err)
	o, err := repo.Stat(ctx, got.Objects[0])
	require.NoError(t, err)
	_, err = bundle.Open(ctx, repo, o.Name, o.Size, nil)
	require.ErrorIs(t, err, bundle.ErrKeyRequired)
}

func bundleOpen(ctx context.Context, repo repository.Repository, ref repository.BundleRef) ([]string, error) {
	r, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, nil)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range r.Entries() {
		names = append(names, e.Name)
	}
	return names, nil
}

// FetchWAL returns what was shipped, byte for byte, from the newest copy;
// an unknown file is repository.ErrNotFound.
func TestFetchWAL(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{seg(1, 1): []byte("one"), seg(1, 2): []byte("two"), "00000002.history": []byte("1\t0/2000000\tno recovery target specified\n")}
	_, rt := fakeGuest(t, files)
	repo := memory.New()
	_, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	for name, want := range files {
		var buf bytes.Buffer
		require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, name, nil, &buf))
		assert.Equal(t, want, buf.Bytes(), name)
	}
	for _, name := range []string{seg(1, 3), seg(2, 1), "00000003.history"} {
		require.ErrorIs(t, walbackup.FetchWAL(ctx, repo, inst, name, nil, io.Discard), repository.ErrNotFound, name)
	}
	require.Error(t, walbackup.FetchWAL(ctx, repo, inst, "../etc/passwd", nil, io.Discard))
}

// zstdReceiver is a guest.ZstdReceiver that decompresses what it is given
// and checks it as a guest would.
type zstdReceiver struct {
	bytes.Buffer              // raw bytes
	stream       bytes.Buffer // a zstd stream
	size         int64        // as announced with it
	sum          checksum.Sum
	streams      int
}

func (z *zstdReceiver) Zstd(rawSize int64, sum checksum.Sum) io.Writer {
	z.size, z.sum = rawSize, sum
	z.streams++
	return &z.stream
}

// content returns what arrived, decompressed and checked.
func (z *zstdReceiver) content(t *testing.T) []byte {
	t.Helper()
	if z.streams == 0 {
		return z.Bytes()
	}
	require.Zero(t, z.Len(), "nothing raw besides the stream")
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(guest.MaxZstdWindow))
	require.NoError(t, err)
	raw, err := dec.DecodeAll(z.stream.Bytes(), nil)
	require.NoError(t, err)
	require.Equal(t, z.size, int64(len(raw)))
	require.Equal(t, checksum.XXH3, z.sum.Algorithm, "receivers check XXH3")
	require.Equal(t, z.sum, checksum.Of(checksum.XXH3, raw))
	return raw
}

// To a guest.ZstdReceiver, FetchWAL hands a segment over as the
// repository stores it, compressed, with the size and checksum to check
// it against; a history file, stored raw, goes as it is. A stream
// corrupted in the repository is refused by FetchWAL itself.
func TestFetchWALCompressed(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{seg(1, 1): bytes.Repeat([]byte("one"), 100000), seg(1, 2): []byte("two"), "00000002.history": []byte("1\t0/2000000\tno recovery target specified\n")}
	_, rt := fakeGuest(t, files)
	repo := memory.New()
	_, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	for name, want := range files {
		var z zstdReceiver
		require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, name, nil, &z))
		assert.Equal(t, want, z.content(t), name)
		assert.Equal(t, name != "00000002.history", z.streams == 1, "%s went compressed", name)
	}
	assert.Equal(t, int64(bundle.MaxWindow), int64(guest.MaxZstdWindow), "a guest takes every stream a bundle holds")

	// A flipped bit in the segment's stored stream.
	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	require.Len(t, refs, 1)
	r, err := bundle.Open(ctx, repo, refs[0].Object.Name, refs[0].Object.Size, nil)
	require.NoError(t, err)
	e, _ := r.Entry(seg(1, 1))
	replace(t, repo, refs[0].Object.Name, func(b []byte) []byte { b[e.Offset+e.Length/2] ^= 1; return b })
	err = walbackup.FetchWAL(ctx, repo, inst, seg(1, 1), nil, &zstdReceiver{})
	require.ErrorIs(t, err, bundle.ErrCorrupt)
}

// With a key, a timeline history file is stored sealed for its object
// name: its lines are not in clear, FetchWAL gives them back, a retried
// ship of the same file is not a split brain, and a history written in
// clear (by anyone who can write to the repository) or moved from another
// instance is refused, so recovery cannot be sent down a planted timeline.
func TestShipOnceSealsHistoryFiles(t *testing.T) {
	ctx := context.Background()
	key, err := bundle.NewKey(bytes.Repeat([]byte{9}, bundle.KeySize))
	require.NoError(t, err)
	history := []byte("1\t0/5000000\tbefore 2026\n")
	g, rt := fakeGuest(t, map[string][]byte{"00000002.history": history, seg(2, 5): []byte("timeline two")})
	repo := memory.New()
	_, err = walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{Key: key})
	require.NoError(t, err)
	assert.Empty(t, g.Waiting())
	name := inst.HistoryName("00000002.history")
	rc, err := repo.Get(ctx, name, 0, -1)
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	assert.NotContains(t, string(b), "before 2026", "sealed, not in clear")

	var got bytes.Buffer
	require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, "00000002.history", key, &got))
	assert.Equal(t, history, got.Bytes())
	require.ErrorIs(t, walbackup.FetchWAL(ctx, repo, inst, "00000002.history", nil, io.Discard), bundle.ErrKeyRequired)

	// The guest archives the same file again (a crash before it was
	// removed): the sealed copy holds the same lines.
	g.AddWAL("00000002.history", history)
	_, err = walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{Key: key})
	require.NoError(t, err)
	assert.Empty(t, g.Waiting())

	// Another history of the same timeline: the sealed copy holds other
	// lines, which is a split brain, and the stored copy stays.
	g.AddWAL("00000002.history", []byte("1\t0/6000000\tanother branch\n"))
	_, err = walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{Key: key})
	require.ErrorIs(t, err, walbackup.ErrSplitBrain)
	got.Reset()
	require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, "00000002.history", key, &got))
	assert.Equal(t, history, got.Bytes())

	// Planted in clear, and moved from another instance.
	planted := repository.Instance{Job: inst.Job, Machine: inst.Machine, SystemID: inst.SystemID + 1}
	require.NoError(t, repo.Put(ctx, planted.HistoryName("00000003.history"), strings.NewReader("2\t0/6000000\tforged\n")))
	require.ErrorIs(t, walbackup.FetchWAL(ctx, repo, planted, "00000003.history", key, io.Discard), bundle.ErrNotEncrypted)
	require.NoError(t, repo.Put(ctx, planted.HistoryName("00000002.history"), bytes.NewReader(b)))
	require.ErrorIs(t, walbackup.FetchWAL(ctx, repo, planted, "00000002.history", key, io.Discard), bundle.ErrCorrupt)
}

// xxh3Of is the checksum a WAL bundle holds of content.
func xxh3Of(content string) checksum.Sum { return checksum.Of(checksum.XXH3, []byte(content)) }

// WAL shipped by an earlier release lies in bundles of SHA-256 sums, which
// the guest's XXH3 of a file offered again cannot be compared with: the
// host sums the guest's copy with SHA-256 itself. The same content then
// leaves the guest without being stored again; other content is a split
// brain, reported with the stored copy's SHA-256.
func TestShipOnceComparesWithOlderSHA256Copies(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	obj := inst.NewBundleName(1, seg(1, 1), seg(1, 2))
	var buf bytes.Buffer
	w, err := bundle.NewWriter(&buf, obj, nil) // as earlier releases wrote WAL
	require.NoError(t, err)
	for _, f := range []struct{ name, content string }{{seg(1, 1), "one"}, {seg(1, 2), "two"}} {
		_, err = w.Add(f.name, bundle.Raw, strings.NewReader(f.content))
		require.NoError(t, err)
	}
	_, err = w.Close()
	require.NoError(t, err)
	require.NoError(t, repo.Put(ctx, obj, &buf))

	g, rt := fakeGuest(t, map[string][]byte{seg(1, 1): []byte("one"), seg(1, 2): []byte("two, as the other primary wrote it"),
		seg(1, 3): []byte("three")})
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.ErrorIs(t, err, walbackup.ErrSplitBrain)
	assert.Contains(t, err.Error(), seg(1, 2))
	assert.Contains(t, err.Error(), checksum.Of(checksum.SHA256, []byte("two")).String(), "the stored copy's checksum")
	assert.NotContains(t, err.Error(), seg(1, 1), "the same content is no split brain")
	assert.Equal(t, 2, got.Files, "the new segment, and the one stored before that left the guest")
	assert.Empty(t, g.Waiting(), "every file is safe in the repository")
	sums := storedSums(t, repo, inst, 1)
	assert.Equal(t, checksum.Of(checksum.SHA256, []byte("one")), sums[seg(1, 1)], "not stored again")
	assert.Equal(t, xxh3Of("three"), sums[seg(1, 3)], "new WAL sums with XXH3")
	in := stored(t, repo, inst, 1)
	assert.Equal(t, []byte("two"), in[seg(1, 2)], "the stored copy stays")

	var z zstdReceiver
	require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, seg(1, 1), nil, &z))
	assert.Equal(t, []byte("one"), z.content(t))
	assert.Zero(t, z.streams, "a file of an older bundle goes decompressed, checked here")
}
