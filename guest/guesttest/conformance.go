package guesttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Harness gives RunConformance a deployer to check and a way to make the
// guest's PostgreSQL archive WAL.
type Harness struct {
	// New returns the deployer under test and the target it deploys to.
	// It is called once per subtest, with a guest whose temporary folder
	// holds no WAL.
	New func(t testing.TB) (guest.Deployer, guest.Target)
	// Dir is the temporary WAL folder PrepareArchive is given.
	Dir func(t testing.TB) string
	// Archive makes the guest archive n more WAL files (a real PostgreSQL:
	// switch WAL and wait for the archiver) and returns the raw content of
	// every file now waiting in the folder, by name.
	Archive func(t testing.TB, rt guest.Runtime, n int) map[string][]byte
}

// RunConformance checks a guest.Deployer and its Runtime against the
// contract: deploy and close (idempotent, ErrClosed after), the instance
// Scan reports, PrepareArchive idempotent, Ready in WAL order, Read in the
// asked order with the raw size and XXH3 of what was read and the
// callback's error returned as is, Remove idempotent, independent
// runtimes, and backup mode where the runtime has it.
func RunConformance(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"DeployClose", guestDeployClose},
		{"Scan", guestScan},
		{"ShipPath", guestShipPath},
		{"Independent", guestIndependent},
		{"BackupMode", guestBackupMode},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, h) })
	}
}

func deploy(t *testing.T, h Harness) (guest.Runtime, guest.Deployer, guest.Target) {
	t.Helper()
	d, target := h.New(t)
	rt, err := d.Deploy(context.Background(), target)
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close(context.Background()) })
	return rt, d, target
}

func guestDeployClose(t *testing.T, h Harness) {
	ctx := context.Background()
	rt, _, _ := deploy(t, h)
	require.NoError(t, rt.Close(ctx))
	require.NoError(t, rt.Close(ctx), "Close is idempotent")
	_, err := rt.Scan(ctx)
	require.ErrorIs(t, err, guest.ErrClosed)
	_, err = rt.Ready(ctx)
	require.ErrorIs(t, err, guest.ErrClosed)
}

func guestScan(t *testing.T, h Harness) {
	rt, _, _ := deploy(t, h)
	inst, err := rt.Scan(context.Background())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, inst.Version, guest.MinVersion)
	assert.NotZero(t, inst.SystemID)
	assert.Positive(t, inst.WALSegmentSize)
	assert.NotZero(t, inst.Timeline)
	assert.True(t, inst.Running)
}

func guestShipPath(t *testing.T, h Harness) {
	ctx := context.Background()
	rt, _, _ := deploy(t, h)
	cfg := guest.ArchiveConfig{Dir: h.Dir(t)}
	require.NoError(t, rt.PrepareArchive(ctx, cfg))
	require.NoError(t, rt.PrepareArchive(ctx, cfg), "PrepareArchive is idempotent")
	want := h.Archive(t, rt, 3)
	require.GreaterOrEqual(t, len(want), 3)

	files, err := rt.Ready(ctx)
	require.NoError(t, err)
	var names []string
	for i, f := range files {
		names = append(names, f.Name)
		if i > 0 {
			assert.Less(t, files[i-1].Name, f.Name, "Ready lists in WAL order")
		}
		assert.Equal(t, int64(len(want[f.Name])), f.Size, f.Name)
	}
	require.Len(t, names, len(want))

	// Read in the asked order, reversed here.
	var order []string
	rev := append([]string(nil), names...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	err = rt.Read(ctx, rev, func(f guest.Frame) error {
		raw := decodeFrame(t, f)
		size, sum := f.Checksum()
		assert.Equal(t, int64(len(raw)), size, "%s raw size", f.Name)
		assert.Equal(t, checksum.Of(checksum.XXH3, raw), sum, "%s checksum of what was read (XXH3, as WAL bundles hold it)", f.Name)
		assert.Equal(t, want[f.Name], raw, "%s content", f.Name)
		order = append(order, f.Name)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, rev, order)

	stop := errors.New("the callback stops")
	err = rt.Read(ctx, names, func(guest.Frame) error { return stop })
	require.ErrorIs(t, err, stop, "the callback's error comes back as is")
	require.Error(t, rt.Read(ctx, []string{"00000001000000FF000000FF"}, func(guest.Frame) error { return nil }),
		"a file not in the folder")

	require.NoError(t, rt.Remove(ctx, names[:1]))
	require.NoError(t, rt.Remove(ctx, names), "Remove is idempotent")
	files, err = rt.Ready(ctx)
	require.NoError(t, err)
	assert.Empty(t, files)
}

func guestIndependent(t *testing.T, h Harness) {
	ctx := context.Background()
	rt1, d, target := deploy(t, h)
	rt2, err := d.Deploy(ctx, target)
	require.NoError(t, err)
	defer rt2.Close(ctx)
	require.NoError(t, rt1.Close(ctx))
	_, err = rt2.Scan(ctx)
	require.NoError(t, err, "closing one runtime leaves another working")
}

func guestBackupMode(t *testing.T, h Harness) {
	ctx := context.Background()
	rt, _, _ := deploy(t, h)
	bm, ok := rt.(guest.BackupMode)
	if !ok {
		t.Log("the runtime has no backup mode (optional)")
		return
	}
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: h.Dir(t)}))
	start, err := bm.StartBackup(ctx, "conformance")
	require.NoError(t, err)
	assert.NotZero(t, start.LSN)
	assert.NotZero(t, start.Timeline)
	_, err = bm.StartBackup(ctx, "again")
	require.Error(t, err, "one backup at a time per runtime")
	stop, err := bm.StopBackup(ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, stop.LSN, start.LSN)
	assert.Contains(t, stop.BackupLabel, "START WAL LOCATION")
	assert.Contains(t, stop.BackupLabel, "conformance")
	_, err = bm.StopBackup(ctx)
	require.Error(t, err, "no backup to stop")
}

// decodeFrame returns a frame's raw content.
func decodeFrame(t testing.TB, f guest.Frame) []byte {
	t.Helper()
	var r io.Reader = f.Data
	switch f.Codec {
	case guest.CodecZstd:
		dec, err := zstd.NewReader(f.Data)
		require.NoError(t, err)
		defer dec.Close()
		r = dec
	case guest.CodecS2:
		r = s2.NewReader(f.Data)
	}
	var buf bytes.Buffer
	_, err := io.Copy(&buf, r)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, f.Data) // to its end: the checksum is known then
	require.NoError(t, err)
	return buf.Bytes()
}
