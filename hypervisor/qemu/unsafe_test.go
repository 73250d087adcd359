package qemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/memory"
)

// A qcow2 file planted in the repository whose header names another file
// (a backing file, an external data file) is refused before qemu-img
// opens it, whatever its checksum: nothing is restored, and the file it
// names is never opened (a FIFO there would block whoever opened it).
func TestQEMURestoreRefusesPlantedImages(t *testing.T) {
	qemuImg := testenv.QemuImg(t)
	dir := t.TempDir()
	img := func(name string, args ...string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		out, err := exec.Command(qemuImg, append([]string{"create", "-q", "-f", "qcow2"}, append(args, p, strconv.Itoa(diskSize))...)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return p
	}
	secret := filepath.Join(dir, "secret")
	require.NoError(t, syscall.Mkfifo(secret, 0o600))
	data := filepath.Join(dir, "data")
	cases := map[string]string{
		"backing file":       img("backing.qcow2", "-b", secret, "-F", "raw", "-u"),
		"external data file": img("data.qcow2", "-o", "data_file="+data),
	}
	require.NoError(t, os.Remove(data))
	require.NoError(t, syscall.Mkfifo(data, 0o600))
	raw := filepath.Join(dir, "raw.img")
	require.NoError(t, os.WriteFile(raw, make([]byte, 1<<20), 0o600))
	cases["not qcow2"] = raw
	good := img("good.qcow2")

	h, err := New(Config{WorkDir: filepath.Join(dir, "work"), QemuImg: qemuImg, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	repo := memory.New()
	plant := func(name, path string) hypervisor.Image {
		t.Helper()
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		enc, err := zstd.NewWriter(nil)
		require.NoError(t, err)
		z := enc.EncodeAll(b, nil)
		obj := "planted/" + name + "/" + ObjectName
		require.NoError(t, repo.Put(ctxT(t), obj, bytes.NewReader(z)))
		sum := sha256.Sum256(z)
		return hypervisor.Image{Machine: "vm1", Full: true, Prefix: "planted/" + name,
			Objects: []hypervisor.ImageObject{{Name: obj, Size: int64(len(z)), SHA256: hex.EncodeToString(sum[:])}},
			Meta:    map[string]string{MetaFormat: FormatQcow2, MetaCompression: CompressionZstd, MetaVirtualSize: strconv.Itoa(diskSize)}}
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			target := filepath.Join(dir, "restored-"+filepath.Base(path))
			err := h.Restore(ctxT(t), []hypervisor.Image{plant(filepath.Base(path), path)}, repo, target, nil)
			require.ErrorIs(t, err, ErrUnsafeImage)
			t.Log(err)
			assert.NoFileExists(t, target)
		})
	}
	t.Run("an incremental with a backing file", func(t *testing.T) {
		base := plant("base", good)
		inc := plant("inc", cases["backing file"])
		inc.Full, inc.Base = false, base.Prefix
		target := filepath.Join(dir, "restored-chain.qcow2")
		require.ErrorIs(t, h.Restore(ctxT(t), []hypervisor.Image{base, inc}, repo, target, nil), ErrUnsafeImage)
		assert.NoFileExists(t, target)
	})
	t.Run("another disk size", func(t *testing.T) {
		other := plant("size", good)
		other.Meta[MetaVirtualSize] = strconv.Itoa(2 * diskSize)
		require.ErrorIs(t, h.Restore(ctxT(t), []hypervisor.Image{other}, repo, filepath.Join(dir, "size.qcow2"), nil), ErrUnsafeImage)
	})
	// The same file without what it names restores: the check is on the
	// header, not on qcow2 as such.
	target := filepath.Join(dir, "restored-good.qcow2")
	require.NoError(t, h.Restore(ctxT(t), []hypervisor.Image{plant("good", good)}, repo, target, nil))
	assert.FileExists(t, target)
	entries, err := os.ReadDir(filepath.Join(dir, "work"))
	require.NoError(t, err)
	assert.Empty(t, entries)
}

func FuzzParseQcow2(f *testing.F) {
	hdr := make([]byte, 112)
	copy(hdr, "QFI\xfb")
	hdr[7] = 3
	hdr[23] = 16
	hdr[103] = 104
	f.Add(hdr)
	f.Add(hdr[:72])
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseQcow2(b); err == nil && (len(b) < 20 || !bytes.Equal(b[8:20], make([]byte, 12))) {
			t.Fatalf("accepted a header that names a backing file: % x", b[:min(len(b), 20)])
		}
	})
}

// With a key, a chain of images is stored sealed (no qcow2 byte in clear)
// and restores with the key only; a sealed image moved to another prefix,
// and a plain image in place of a sealed one, are refused.
func TestQEMUSealedImages(t *testing.T) {
	key, err := bundle.NewKey(bytes.Repeat([]byte{7}, bundle.KeySize))
	require.NoError(t, err)
	l := newLab(t, func(c *Config) { c.Key = key })
	ctx := ctxT(t)
	l.q.WriteFile(t, l.randomFile(t, 1*mib), 0, 1*mib)
	full := l.backup(t, "vm1/images/0001", nil)
	l.q.Write(t, 0x33, 8*mib, 1*mib)
	at := l.copyDisk(t, "at-incremental.qcow2")
	inc := l.backup(t, "vm1/images/0002", &full)
	require.False(t, inc.Full)
	for _, img := range []hypervisor.Image{full, inc} {
		assert.Equal(t, img.Prefix+"/"+SealedObjectName, img.Objects[0].Name)
		assert.Equal(t, SealedBundle, img.Meta[MetaSealed])
		rc, err := l.repo.Get(ctx, img.Objects[0].Name, 0, -1)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		assert.NotContains(t, string(b), "QFI\xfb", "the qcow2 header is not in clear")
	}
	restored := l.restore(t, "restored.qcow2", full, inc)
	assert.True(t, l.q.Identical(t, at, restored))

	// Without the key.
	plainH, err := New(Config{WorkDir: filepath.Join(l.dir, "plain-work"), QemuImg: l.q.QemuImg})
	require.NoError(t, err)
	target := filepath.Join(l.dir, "nokey.qcow2")
	require.ErrorIs(t, plainH.Restore(ctx, []hypervisor.Image{full}, l.repo, target, nil), bundle.ErrKeyRequired)
	assert.NoFileExists(t, target)

	// Moved: the sealed object copied under another image's prefix.
	moved := full
	moved.Prefix = "vm1/images/0009"
	moved.Objects = []hypervisor.ImageObject{full.Objects[0]}
	moved.Objects[0].Name = moved.Prefix + "/" + SealedObjectName
	rc, err := l.repo.Get(ctx, full.Objects[0].Name, 0, -1)
	require.NoError(t, err)
	require.NoError(t, l.repo.Put(ctx, moved.Objects[0].Name, rc))
	rc.Close()
	target = filepath.Join(l.dir, "moved.qcow2")
	require.ErrorIs(t, l.h.Restore(ctx, []hypervisor.Image{moved}, l.repo, target, nil), bundle.ErrCorrupt)
	assert.NoFileExists(t, target)

	// Downgraded: a plain image (any qcow2 at all) where a sealed one was.
	plain, err := plainH.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrNotFound, "plainH has no VMs")
	assert.Nil(t, plain)
	forged := full
	forged.Meta = map[string]string{}
	for k, v := range full.Meta {
		forged.Meta[k] = v
	}
	delete(forged.Meta, MetaSealed)
	target = filepath.Join(l.dir, "forged.qcow2")
	require.ErrorIs(t, l.h.Restore(ctx, []hypervisor.Image{forged}, l.repo, target, nil), bundle.ErrNotEncrypted)
	assert.NoFileExists(t, target)
	entries, err := os.ReadDir(l.h.cfg.WorkDir)
	require.NoError(t, err)
	assert.Empty(t, entries)
}
