package repository_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
)

func TestComponent(t *testing.T) {
	a := repository.Component("Daily DB Job")
	assert.True(t, strings.HasPrefix(a, "daily-db-job-"), a)
	assert.NotEqual(t, a, repository.Component("daily db job"), "names that slug alike stay apart")
	for _, n := range []string{"Daily DB Job", "!!!", "", "ü", strings.Repeat("long name ", 40), "../etc"} {
		c := repository.Component(n)
		require.NoError(t, repository.ValidName(c), "%q -> %q", n, c)
		assert.NotContains(t, c, "/")
		assert.LessOrEqual(t, len(c), 60)
	}
}

func TestBundleNamesAndLookup(t *testing.T) {
	ctx := context.Background()
	inst := repository.Instance{Job: "Daily DB Job", Machine: "vm-1", SystemID: 7311571392434063147}
	other := repository.Instance{Job: "Daily DB Job", Machine: "vm-1", SystemID: 42}
	assert.NotEqual(t, inst.Prefix(), other.Prefix(), "clusters never share a folder")

	repo := memory.New()
	put := func(name string) {
		require.NoError(t, repository.ValidName(name), name)
		require.NoError(t, repo.Put(ctx, name, strings.NewReader(name)))
	}
	seg := func(n string) string { return "00000001000000000000000" + n }
	put(inst.NewBundleName(1, seg("1"), seg("4")))
	put(inst.NewBundleName(1, seg("5"), seg("8")))
	put(inst.NewBundleName(1, seg("4"), seg("6"))) // a retried batch overlaps
	put(inst.NewBundleName(2, "000000020000000000000008", "000000020000000000000009"))
	put(inst.WALFolder(1) + "README")
	a, b := inst.NewBundleName(1, seg("1"), seg("2")), inst.NewBundleName(1, seg("1"), seg("2"))
	assert.NotEqual(t, a, b, "each attempt gets its own name")
	put(other.NewBundleName(1, seg("1"), seg("9")))

	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	require.Len(t, refs, 3, "only this cluster's timeline-1 bundles")
	assert.Equal(t, []string{seg("1"), seg("4"), seg("5")}, []string{refs[0].First, refs[1].First, refs[2].First})
	assert.Len(t, repository.Covering(refs, seg("2")), 1)
	assert.Len(t, repository.Covering(refs, seg("5")), 2)
	assert.Empty(t, repository.Covering(refs, seg("9")))
	assert.Len(t, repository.Covering(refs, seg("4")+".partial"), 1, "a .partial sorts right after its segment: only 4..6 can hold it")
}

func validManifest() *repository.Manifest {
	return &repository.Manifest{
		Version: repository.ManifestVersion, ID: "20261125T220000Z", Job: "Daily DB Job", Machine: "vm-1",
		SystemID: 7311571392434063147, Timeline: 1, StartLSN: 0x3000028, StopLSN: 0x3000138,
		StartTime: time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC), StopTime: time.Date(2026, 11, 25, 22, 1, 0, 0, time.UTC),
		BackupLabel: "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n", Full: true,
		Objects: []repository.ManifestObject{{Name: "disk.qcow2", Size: 10, SHA256: strings.Repeat("ab", 32)}},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	b, err := repository.EncodeManifest(validManifest())
	require.NoError(t, err)
	assert.Contains(t, string(b), `"system_id": "7311571392434063147"`, "64-bit ids survive JSON readers")
	assert.Contains(t, string(b), `"start_lsn": "0/3000028"`)
	m, err := repository.DecodeManifest(b)
	require.NoError(t, err)
	assert.Equal(t, validManifest(), m)
}

func TestManifestRules(t *testing.T) {
	tests := map[string]func(*repository.Manifest){
		"version":           func(m *repository.Manifest) { m.Version = 2 },
		"id with slash":     func(m *repository.Manifest) { m.ID = "a/b" },
		"no system id":      func(m *repository.Manifest) { m.SystemID = 0 },
		"lsn backwards":     func(m *repository.Manifest) { m.StopLSN = 1 },
		"no label":          func(m *repository.Manifest) { m.BackupLabel = "" },
		"full with base":    func(m *repository.Manifest) { m.Base = "x" },
		"incr without base": func(m *repository.Manifest) { m.Full = false },
		"no objects":        func(m *repository.Manifest) { m.Objects = nil },
		"bad sha":           func(m *repository.Manifest) { m.Objects[0].SHA256 = "zz" },
		"dup object": func(m *repository.Manifest) {
			m.Objects = append(m.Objects, m.Objects[0])
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			m := validManifest()
			mutate(m)
			_, err := repository.EncodeManifest(m)
			require.ErrorIs(t, err, repository.ErrBadManifest)
		})
	}
	_, err := repository.DecodeManifest([]byte(`{"version":1,"surprise":true}`))
	require.ErrorIs(t, err, repository.ErrBadManifest)
}

func FuzzDecodeManifest(f *testing.F) {
	b, _ := repository.EncodeManifest(validManifest())
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"start_lsn":"1/2"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := repository.DecodeManifest(data)
		if err != nil {
			require.ErrorIs(t, err, repository.ErrBadManifest)
			return
		}
		again, err := repository.EncodeManifest(m)
		require.NoError(t, err, "what decodes re-encodes")
		m2, err := repository.DecodeManifest(again)
		require.NoError(t, err)
		require.Equal(t, m.ID, m2.ID)
	})
}

func TestManifestSegmentSize(t *testing.T) {
	m := validManifest()
	assert.Equal(t, int64(16<<20), m.SegmentSize(), "absent means 16 MiB")
	for _, bad := range []int64{1 << 19, 3 << 20, 2 << 30} {
		m.WALSegmentSize = bad
		require.ErrorIs(t, m.Validate(), repository.ErrBadManifest, "%d", bad)
	}
	m.WALSegmentSize = 64 << 20
	require.NoError(t, m.Validate())
	assert.Equal(t, int64(64<<20), m.SegmentSize())
}
