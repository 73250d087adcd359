package physical_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/repository/memory"
)

// fakeFiles is a runtime holding a cluster's files in memory, for the
// failures the real runtime cannot be made to show on demand.
type fakeFiles struct {
	guest.Runtime // nil: only Close and guest.DataFiles are used
	files         map[string][]byte
	afterList     func(f *fakeFiles)
	lieAbout      string            // a file whose checksum the guest misreports
	modes         map[string]uint32 // a file's or folder's mode, when not the default
	closed        int
}

func (f *fakeFiles) Close(context.Context) error { f.closed++; return nil }

func (f *fakeFiles) mode(p string, def uint32) uint32 {
	if m, ok := f.modes[p]; ok {
		return m
	}
	return def
}

func (f *fakeFiles) ListDataFiles(_ context.Context, opts guest.DataListOptions) ([]guest.DataFile, error) {
	out := []guest.DataFile{{Path: ".", Dir: true, Mode: 0o700}}
	dirs := map[string]bool{}
	for p, b := range f.files {
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			out = append(out, guest.DataFile{Path: d, Dir: true, Mode: f.mode(d, 0o700)})
		}
		e := guest.DataFile{Path: p, Size: int64(len(b)), ModTime: 1, Mode: f.mode(p, 0o600)}
		if opts.Checksums {
			sum := sha256.Sum256(b)
			e.SHA256 = hex.EncodeToString(sum[:])
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	if f.afterList != nil {
		f.afterList(f)
	}
	return out, nil
}

func (f *fakeFiles) ReadDataFiles(_ context.Context, paths []string, fn func(guest.Frame) error) ([]string, error) {
	var vanished []string
	for _, p := range paths {
		b, ok := f.files[p]
		if !ok {
			vanished = append(vanished, p)
			continue
		}
		sum := checksum.Of(checksum.SHA256, b)
		if p == f.lieAbout {
			sum.Digest[0] ^= 1
		}
		err := fn(guest.Frame{Name: p, Codec: guest.CodecNone, Data: bytes.NewReader(b),
			Checksum: func() (int64, checksum.Sum) { return int64(len(b)), sum }})
		if err != nil {
			return nil, err
		}
	}
	return vanished, nil
}

type fakeDeployer struct {
	rt  guest.Runtime
	err error
}

func (d *fakeDeployer) Deploy(context.Context, guest.Target) (guest.Runtime, error) {
	return d.rt, d.err
}

func newFake(t *testing.T, rt guest.Runtime) (*physical.Hypervisor, *fakeDeployer) {
	t.Helper()
	d := &fakeDeployer{rt: rt}
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "m1", Address: "10.0.0.1:22"}, {ID: "m2"}}, Guests: d, Clock: clock.NewMock(), Logger: testenv.Logger(t)})
	require.NoError(t, err)
	return hv, d
}

func TestNewAndSnapshotErrors(t *testing.T) {
	ctx := context.Background()
	_, err := physical.New(physical.Config{})
	require.ErrorContains(t, err, "deployer is required")
	_, err = physical.New(physical.Config{Guests: &fakeDeployer{}, Machines: []physical.Machine{{ID: "a"}, {ID: "a"}}})
	require.ErrorContains(t, err, "twice")

	hv, d := newFake(t, &fakeFiles{})
	ms, err := hv.Machines(ctx)
	require.NoError(t, err)
	assert.Equal(t, []hypervisor.Machine{{ID: "m1", GuestAddr: "10.0.0.1:22"}, {ID: "m2"}}, ms)
	_, err = hv.Snapshot(ctx, "nope", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrNotFound)
	_, err = hv.Snapshot(ctx, "m1", hypervisor.SnapshotOptions{Quiesce: true})
	require.ErrorIs(t, err, hypervisor.ErrUnsupported)

	d.err = errors.New("no route to guest")
	_, err = hv.Snapshot(ctx, "m1", hypervisor.SnapshotOptions{})
	require.ErrorContains(t, err, "no route")
	d.err = nil

	// A runtime that cannot stream data files is closed again.
	g := guesttest.NewGuest(guest.Instance{})
	rt, err := guesttest.NewDeployer(map[string]*guesttest.Guest{"m1": g}).Deploy(ctx, guest.Target{Machine: "m1"})
	require.NoError(t, err)
	d.rt = rt
	_, err = hv.Snapshot(ctx, "m1", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrUnsupported)
	assert.Zero(t, g.Installed(), "closed")

	files := &fakeFiles{files: map[string][]byte{"PG_VERSION": []byte("16\n")}}
	d.rt = files
	snap, err := hv.Snapshot(ctx, "m1", hypervisor.SnapshotOptions{})
	require.NoError(t, err, "failed snapshots do not hold the machine")
	_, err = hv.Snapshot(ctx, "m2", hypervisor.SnapshotOptions{})
	require.NoError(t, err, "other machines are free")
	require.NoError(t, snap.Release(ctx))
	require.NoError(t, snap.Release(ctx))
	assert.Equal(t, 1, files.closed, "released once")
	_, err = snap.Export(ctx, memory.New(), "p", nil)
	require.ErrorContains(t, err, "released")
}

func exportOnce(t *testing.T, hv *physical.Hypervisor, dst hypervisor.ObjectPutter, prefix string, base *hypervisor.Image) (hypervisor.Image, error) {
	t.Helper()
	snap, err := hv.Snapshot(context.Background(), "m1", hypervisor.SnapshotOptions{Base: base})
	require.NoError(t, err)
	defer snap.Release(context.Background())
	return snap.Export(context.Background(), dst, prefix, nil)
}

func TestExportVanishedAndLyingGuest(t *testing.T) {
	ctx := context.Background()
	files := &fakeFiles{files: map[string][]byte{"PG_VERSION": []byte("16\n"), "base/1/1259": []byte("x"), "base/1/16384": []byte("dropped")}}
	files.afterList = func(f *fakeFiles) { delete(f.files, "base/1/16384") }
	hv, _ := newFake(t, files)
	repo := memory.New()
	img, err := exportOnce(t, hv, repo, "p/full", nil)
	require.NoError(t, err)
	idx, err := hv.ReadIndex(ctx, repo, img)
	require.NoError(t, err)
	var got []string
	for _, e := range idx.Files {
		got = append(got, e.Path)
	}
	assert.Equal(t, []string{".", "PG_VERSION", "base", "base/1", "base/1/1259"}, got, "a file gone before it was read is left out")
	assert.Equal(t, "2", img.Meta["stored"])

	files.afterList, files.lieAbout = nil, "PG_VERSION"
	_, err = exportOnce(t, hv, repo, "p/lie", nil)
	require.ErrorIs(t, err, physical.ErrChecksum)
}

// putOnly hides Get, so no base index can be read.
type putOnly struct{ hypervisor.ObjectPutter }

func TestExportFallsBackToFull(t *testing.T) {
	ctx := context.Background()
	files := &fakeFiles{files: map[string][]byte{"PG_VERSION": []byte("16\n")}}
	hv, _ := newFake(t, files)
	repo := memory.New()
	full, err := exportOnce(t, hv, repo, "p/full", nil)
	require.NoError(t, err)

	inc, err := exportOnce(t, hv, repo, "p/inc", &full)
	require.NoError(t, err)
	assert.False(t, inc.Full, "the base is usable")
	assert.Equal(t, "0", inc.Meta["stored"])

	other := full
	other.Machine = "m2"
	missing := full
	missing.Prefix = "p/missing"
	missing.Objects = nil
	for _, o := range full.Objects {
		o.Name = "p/missing/" + path.Base(o.Name)
		missing.Objects = append(missing.Objects, o)
	}
	foreign := full
	foreign.Meta = map[string]string{"bitmap": "b1"}
	for name, tc := range map[string]struct {
		dst  hypervisor.ObjectPutter
		base hypervisor.Image
	}{
		"other-machine":    {repo, other},
		"unreadable":       {repo, missing},
		"other-hypervisor": {repo, foreign},
		"write-only":       {putOnly{repo}, full},
	} {
		img, err := exportOnce(t, hv, tc.dst, "p/"+name, &tc.base)
		require.NoError(t, err, name)
		assert.True(t, img.Full, "%s base: a full image", name)
		assert.Empty(t, img.Base)
	}
	_, err = hv.ReadIndex(ctx, repo, foreign)
	require.ErrorIs(t, err, hypervisor.ErrUnsupported)
}

func TestEncryptedImage(t *testing.T) {
	ctx := context.Background()
	secret := []byte("a row nobody may read in the repository")
	files := &fakeFiles{files: map[string][]byte{"base/1/16384": secret}}
	key, err := bundle.NewKey(bytes.Repeat([]byte{7}, bundle.KeySize))
	require.NoError(t, err)
	d := &fakeDeployer{rt: files}
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "m1"}}, Guests: d, Key: key, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	repo := memory.New()
	img, err := exportOnce(t, hv, repo, "p/full", nil)
	require.NoError(t, err)
	for _, o := range img.Objects {
		b := readObject(t, repo, o.Name)
		assert.NotContains(t, string(b), string(secret[:10]), o.Name)
		sum := sha256.Sum256(secret)
		assert.NotContains(t, string(b), hex.EncodeToString(sum[:]), "%s: no checksum of the content in the clear", o.Name)
	}

	target := filepath.Join(t.TempDir(), "restored")
	require.NoError(t, hv.Restore(ctx, []hypervisor.Image{img}, repo, target, nil))
	got, err := os.ReadFile(filepath.Join(target, "base", "1", "16384"))
	require.NoError(t, err)
	assert.Equal(t, secret, got)

	noKey, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "m1"}}, Guests: d, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	err = noKey.Restore(ctx, []hypervisor.Image{img}, repo, filepath.Join(t.TempDir(), "x"), nil)
	require.ErrorIs(t, err, bundle.ErrKeyRequired)
}

// A guest's setuid, setgid and sticky bits are not restored: a file the
// guest's user made setuid is no setuid program on the host.
func TestRestoreDropsSetuidBits(t *testing.T) {
	files := &fakeFiles{
		files: map[string][]byte{"PG_VERSION": []byte("16\n"), "base/1/16384": []byte("x"), "base/1/16385": []byte("y")},
		modes: map[string]uint32{"base/1/16384": 0o4755, "base/1/16385": 0o2640, "base": 0o1700, "base/1": 0o3750},
	}
	hv, _ := newFake(t, files)
	repo := memory.New()
	img, err := exportOnce(t, hv, repo, "p/full", nil)
	require.NoError(t, err)
	target := filepath.Join(t.TempDir(), "restored")
	require.NoError(t, hv.Restore(context.Background(), []hypervisor.Image{img}, repo, target, nil))
	for p, want := range map[string]os.FileMode{"base/1/16384": 0o755, "base/1/16385": 0o640, "base": os.ModeDir | 0o700, "base/1": os.ModeDir | 0o750} {
		st, err := os.Lstat(filepath.Join(target, p))
		require.NoError(t, err)
		assert.Equal(t, want, st.Mode(), "%s: its permissions, without setuid, setgid or sticky bits", p)
	}
}
