package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// receive reads one streamed file the way the host will.
func receive(t *testing.T, r *proto.Reader) (proto.FileStart, []byte, proto.FileEnd) {
	t.Helper()
	var start proto.FileStart
	require.NoError(t, r.ReadJSON(proto.TypeFileStart, &start))
	var compressed bytes.Buffer
	for {
		typ, p, err := r.Read()
		require.NoError(t, err)
		if typ == proto.TypeFileEnd {
			var end proto.FileEnd
			require.NoError(t, proto.DecodeJSON(p, &end))
			var raw []byte
			switch start.Codec {
			case string(guest.CodecS2):
				raw, err = io.ReadAll(s2.NewReader(&compressed))
			default:
				require.Equal(t, string(guest.CodecZstd), start.Codec)
				dec, derr := zstd.NewReader(nil)
				require.NoError(t, derr)
				raw, err = dec.DecodeAll(compressed.Bytes(), nil)
			}
			require.NoError(t, err)
			return start, raw, end
		}
		require.Equal(t, proto.TypeData, typ)
		require.LessOrEqual(t, len(p), proto.MaxData)
		compressed.Write(p)
	}
}

func TestSendRealSegments(t *testing.T) {
	testenv.SkipIfShort(t)
	segs := testenv.WALCorpus(t, 64)[:4]
	dir := filepath.Dir(segs[0])
	// The corpus came from another cluster: read its identity off a header.
	head, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	inst := guest.Instance{Version: 150018, WALSegmentSize: 16 << 20, SystemID: binary.LittleEndian.Uint64(head[24:])}

	var wire bytes.Buffer
	s, err := NewSender(proto.NewWriter(&wire), inst)
	require.NoError(t, err)
	for _, p := range segs {
		require.NoError(t, s.Send(dir, filepath.Base(p)))
	}
	assert.Less(t, wire.Len(), 4*16<<20, "compressed on the wire")
	r := proto.NewReader(&wire)
	for _, p := range segs {
		start, raw, end := receive(t, r)
		want, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, filepath.Base(p), start.Name)
		assert.Equal(t, "zstd", start.Codec)
		assert.True(t, bytes.Equal(want, raw), "%s byte-identical", start.Name)
		assert.Equal(t, checksum.Of(checksum.XXH3, want).String(), end.Sum, "WAL sums with XXH3")
		assert.Equal(t, int64(len(want)), end.RawSize)
	}
}

func TestSendRefusesBadSegment(t *testing.T) {
	testenv.SkipIfShort(t)
	src := testenv.WALCorpus(t, 64)[0]
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	inst := guest.Instance{Version: 150018, WALSegmentSize: 16 << 20, SystemID: binary.LittleEndian.Uint64(data[24:])}
	dir := t.TempDir()
	name := filepath.Base(src)
	for what, mutate := range map[string]func([]byte) []byte{
		"flipped page address": func(b []byte) []byte { b[9] ^= 0x40; return b },
		"other cluster":        func(b []byte) []byte { b[24] ^= 1; return b },
		"truncated":            func(b []byte) []byte { return b[:len(b)/2] },
	} {
		t.Run(what, func(t *testing.T) {
			path := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(path, mutate(bytes.Clone(data)), 0o600))
			var wire bytes.Buffer
			s, err := NewSender(proto.NewWriter(&wire), inst)
			require.NoError(t, err)
			err = s.Send(dir, name)
			require.ErrorIs(t, err, wal.ErrBadSegment)
			assert.Contains(t, err.Error(), name, "the error names the segment")
			assert.Zero(t, wire.Len(), "nothing was sent")
			_, err = os.Stat(path)
			assert.NoError(t, err, "the file stays in the folder")
		})
	}
}

// SendAll compressing several files at once sends the same stream as Send
// one after another: every file in order, whole, with the session's codec;
// a bad segment in the middle stops it before its FileStart, after the
// ones before it.
func TestSendAllInOrder(t *testing.T) {
	testenv.SkipIfShort(t)
	segs := testenv.WALCorpus(t, 64)[:6]
	head, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	inst := guest.Instance{Version: 150018, WALSegmentSize: 16 << 20, SystemID: binary.LittleEndian.Uint64(head[24:])}
	dir := t.TempDir()
	var names []string
	for _, p := range segs {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600))
		names = append(names, filepath.Base(p))
	}
	check := func(t *testing.T, wire *bytes.Buffer, names []string, codec guest.Codec) {
		r := proto.NewReader(wire)
		for _, n := range names {
			start, raw, end := receive(t, r)
			want, err := os.ReadFile(filepath.Join(dir, n))
			require.NoError(t, err)
			require.Equal(t, n, start.Name)
			require.Equal(t, string(codec), start.Codec)
			require.True(t, bytes.Equal(want, raw), "%s byte-identical", n)
			require.Equal(t, checksum.Of(checksum.XXH3, want).String(), end.Sum)
		}
		require.Zero(t, wire.Len(), "nothing more")
	}
	for _, run := range []struct {
		workers int
		codec   guest.Codec
	}{{1, guest.CodecZstd}, {2, guest.CodecZstd}, {4, guest.CodecZstd}, {1, guest.CodecS2}, {2, guest.CodecS2}} {
		var wire bytes.Buffer
		s, err := NewSender(proto.NewWriter(&wire), inst)
		require.NoError(t, err)
		s.codec = run.codec
		require.NoError(t, s.SendAll(dir, names, run.workers))
		check(t, &wire, names, run.codec)
	}

	bad := filepath.Join(dir, names[3])
	b, err := os.ReadFile(bad)
	require.NoError(t, err)
	b[24] ^= 1 // another cluster's
	require.NoError(t, os.WriteFile(bad, b, 0o600))
	var wire bytes.Buffer
	s, err := NewSender(proto.NewWriter(&wire), inst)
	require.NoError(t, err)
	err = s.SendAll(dir, names, 2)
	require.ErrorIs(t, err, wal.ErrBadSegment)
	require.ErrorContains(t, err, names[3])
	check(t, &wire, names[:3], guest.CodecZstd)
}

// A history file is staged as it is, with its checksum; anything else
// asked for as it is (a segment, several files, a missing file) is
// refused and stages nothing.
func TestStageRaw(t *testing.T) {
	dir := t.TempDir()
	s := &server{dir: dir}
	content := []byte("1\t0/3000000\tno recovery target specified\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "00000002.history"), content, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "000000010000000000000001"), []byte("segment"), 0o600))
	ctx := context.Background()

	got, err := s.stage(ctx, guest.StageRequest{Object: "jobs/j/m/1/wal/history/00000002.history", Names: []string{"00000002.history"}, Raw: true})
	require.NoError(t, err)
	sum := sha256.Sum256(content)
	assert.Equal(t, int64(len(content)), got.Size)
	assert.Equal(t, checksum.OfSHA256(sum), got.Sum)
	assert.Equal(t, []guest.BundleFile{{Name: "00000002.history", RawSize: int64(len(content)), Sum: checksum.OfSHA256(sum)}}, got.Files, "history objects sum with SHA-256")
	staged, err := os.ReadFile(s.stagedPath(got.Object))
	require.NoError(t, err)
	assert.Equal(t, content, staged)

	for name, names := range map[string][]string{
		"a segment":    {"000000010000000000000001"},
		"two files":    {"00000002.history", "00000002.history"},
		"missing file": {"00000003.history"},
		"not WAL":      {"../00000002.history"},
	} {
		_, err := s.stage(ctx, guest.StageRequest{Object: "jobs/j/m/1/wal/history/x", Names: names, Raw: true})
		assert.Error(t, err, name)
	}
	_, err = os.Stat(s.stagedPath("jobs/j/m/1/wal/history/x"))
	assert.True(t, os.IsNotExist(err), "nothing staged")
}

// A staged bundle's bytes are summed with the algorithm the host asks for
// (SHA-256 for a store that checks it, XXH3 for the host's read-back), its
// files always with XXH3; an unknown algorithm, or XXH3 for a history
// file, is refused before anything is staged.
func TestStageSumsTheBundleAsAsked(t *testing.T) {
	testenv.SkipIfShort(t)
	segs := testenv.WALCorpus(t, 64)[:2]
	head, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	dir := t.TempDir()
	s := &server{dir: dir, codec: guest.CodecZstd,
		inst: guest.Instance{Version: 150018, WALSegmentSize: 16 << 20, SystemID: binary.LittleEndian.Uint64(head[24:])}}
	var names []string
	contents := map[string][]byte{}
	for _, p := range segs {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600))
		names = append(names, filepath.Base(p))
		contents[filepath.Base(p)] = b
	}
	ctx := context.Background()
	for _, alg := range []checksum.Algorithm{checksum.SHA256, checksum.XXH3} {
		obj := "jobs/j/m/1/wal/00000001/" + alg.String() + ".bundle"
		got, err := s.stage(ctx, guest.StageRequest{Object: obj, Names: names, Checksum: alg})
		require.NoError(t, err)
		staged, err := os.ReadFile(s.stagedPath(obj))
		require.NoError(t, err)
		assert.Equal(t, checksum.Of(alg, staged), got.Sum, "the staged bytes' %v", alg)
		require.Len(t, got.Files, 2)
		for _, f := range got.Files {
			assert.Equal(t, checksum.Of(checksum.XXH3, contents[f.Name]), f.Sum, f.Name)
		}
	}
	for name, req := range map[string]guest.StageRequest{
		"unknown algorithm":      {Object: "jobs/j/m/1/wal/00000001/x.bundle", Names: names, Checksum: 9},
		"a history file by XXH3": {Object: "jobs/j/m/1/wal/history/x", Names: []string{"00000002.history"}, Raw: true, Checksum: checksum.XXH3},
	} {
		_, err := s.stage(ctx, req)
		assert.ErrorContains(t, err, "refused", name)
		_, err = os.Stat(s.stagedPath(req.Object))
		assert.True(t, os.IsNotExist(err), "%s: nothing staged", name)
	}
}
