package repository_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/memory"
)

func TestRestorePoints(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	m := validManifest()
	inst := repository.Instance{Job: m.Job, Machine: m.Machine, SystemID: m.SystemID}

	ids, err := repository.RestorePointIDs(ctx, repo, inst)
	require.NoError(t, err)
	assert.Empty(t, ids)

	// Objects without a manifest are not a restore point.
	require.NoError(t, repo.Put(ctx, inst.RestorePoint("20261125T000000Z-00000000")+"/disk.img", strings.NewReader("x")))
	older, newer := *m, *m
	older.ID = repository.NewRestorePointID(time.Date(2026, 11, 24, 22, 0, 0, 0, time.UTC))
	newer.ID = repository.NewRestorePointID(time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC))
	assert.Regexp(t, `^20261125T220000Z-[0-9a-f]{8}$`, newer.ID)
	require.NoError(t, repository.WriteManifest(ctx, repo, inst, &newer, nil))
	require.NoError(t, repository.WriteManifest(ctx, repo, inst, &older, nil))

	ids, err = repository.RestorePointIDs(ctx, repo, inst)
	require.NoError(t, err)
	assert.Equal(t, []string{older.ID, newer.ID}, ids, "committed ones only, oldest first")
	all, err := repository.RestorePoints(ctx, repo, inst, nil)
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.Equal(t, newer.ID, all[1].ID)
	assert.Equal(t, m.BackupLabel, all[1].BackupLabel)

	other := inst
	other.SystemID++
	require.ErrorIs(t, repository.WriteManifest(ctx, repo, other, &newer, nil), repository.ErrBadManifest, "a manifest of another cluster")
	_, err = repository.ReadManifest(ctx, repo, inst, "20261125T000000Z-00000000", nil)
	require.ErrorIs(t, err, repository.ErrNotFound)

	// A manifest stored under another restore point's name is refused.
	b, err := repository.EncodeManifest(&older)
	require.NoError(t, err)
	require.NoError(t, repo.Put(ctx, inst.ManifestName("20261126T000000Z-00000000"), bytes.NewReader(b)))
	_, err = repository.ReadManifest(ctx, repo, inst, "20261126T000000Z-00000000", nil)
	require.ErrorIs(t, err, repository.ErrBadManifest)
}

// With a key, a manifest carries a MAC over its content and name: an
// edited checksum, a stripped MAC, one copied to another cluster's folder
// or one written without the key is refused with ErrManifestAuth. It
// stays readable JSON, and readable without the key.
func TestManifestAuthenticated(t *testing.T) {
	ctx := context.Background()
	key, err := bundle.NewKey(bytes.Repeat([]byte{5}, bundle.KeySize))
	require.NoError(t, err)
	other, err := bundle.NewKey(bytes.Repeat([]byte{6}, bundle.KeySize))
	require.NoError(t, err)
	repo := memory.New()
	m := validManifest()
	m.ID = repository.NewRestorePointID(time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC))
	inst := repository.Instance{Job: m.Job, Machine: m.Machine, SystemID: m.SystemID}
	require.NoError(t, repository.WriteManifest(ctx, repo, inst, m, key))
	got, err := repository.ReadManifest(ctx, repo, inst, m.ID, key)
	require.NoError(t, err)
	assert.Equal(t, m.Objects, got.Objects)
	_, err = repository.ReadManifest(ctx, repo, inst, m.ID, nil)
	require.NoError(t, err, "readable without the key")
	_, err = repository.ReadManifest(ctx, repo, inst, m.ID, other)
	require.ErrorIs(t, err, repository.ErrManifestAuth, "another key")

	stored := func() []byte {
		rc, err := repo.Get(ctx, inst.ManifestName(m.ID), 0, -1)
		require.NoError(t, err)
		defer rc.Close()
		var b bytes.Buffer
		_, err = b.ReadFrom(rc)
		require.NoError(t, err)
		return b.Bytes()
	}
	orig := stored()
	put := func(name string, b []byte) {
		require.NoError(t, repo.Delete(ctx, name))
		require.NoError(t, repo.Put(ctx, name, bytes.NewReader(b)))
	}
	edited := *got
	edited.Objects = append([]repository.ManifestObject(nil), got.Objects...)
	edited.Objects[0].SHA256 = strings.Repeat("0", 64)
	b, err := repository.EncodeManifest(&edited)
	require.NoError(t, err)
	put(inst.ManifestName(m.ID), b)
	_, err = repository.ReadManifest(ctx, repo, inst, m.ID, key)
	require.ErrorIs(t, err, repository.ErrManifestAuth, "an edited checksum")

	stripped := *got
	stripped.MAC = ""
	b, err = repository.EncodeManifest(&stripped)
	require.NoError(t, err)
	put(inst.ManifestName(m.ID), b)
	_, err = repository.ReadManifest(ctx, repo, inst, m.ID, key)
	require.ErrorIs(t, err, repository.ErrManifestAuth, "no MAC")

	put(inst.ManifestName(m.ID), orig)
	_, err = repository.ReadManifest(ctx, repo, inst, m.ID, key)
	require.NoError(t, err, "whole again")
	moved := inst
	moved.Machine = "another"
	require.NoError(t, repo.Put(ctx, moved.ManifestName(m.ID), bytes.NewReader(orig)))
	_, err = repository.ReadManifest(ctx, repo, moved, m.ID, key)
	require.ErrorIs(t, err, repository.ErrManifestAuth, "another cluster's folder")
}

func TestInstances(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	for i, id := range []uint64{9, 7, 9} {
		inst := repository.Instance{Job: "Daily DB Job", Machine: "db1", SystemID: id}
		require.NoError(t, repo.Put(ctx, inst.HistoryName("0000000"+strconv.Itoa(i+2)+".history"), strings.NewReader("x")))
	}
	other := repository.Instance{Job: "Daily DB Job", Machine: "db2", SystemID: 8}
	require.NoError(t, repo.Put(ctx, other.HistoryName("00000002.history"), strings.NewReader("x")))
	got, err := repository.Instances(ctx, repo, "Daily DB Job", "db1")
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, []uint64{7, 9}, []uint64{got[0].SystemID, got[1].SystemID})
	assert.Equal(t, "db1", got[0].Machine)
}

// A manifest over MaxManifest is refused with ErrTooLarge when read (only
// MaxManifest bytes are read) and when written.
func TestManifestOverTheLimit(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	m := validManifest()
	m.ID = repository.NewRestorePointID(time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC))
	inst := repository.Instance{Job: m.Job, Machine: m.Machine, SystemID: m.SystemID}
	m.BackupLabel = strings.Repeat("x", repository.MaxManifest)
	require.ErrorIs(t, repository.WriteManifest(ctx, repo, inst, m, nil), repository.ErrTooLarge)
	_, err := repo.Stat(ctx, inst.ManifestName(m.ID))
	require.ErrorIs(t, err, repository.ErrNotFound, "nothing written")

	b, err := repository.EncodeManifest(m)
	require.NoError(t, err)
	require.NoError(t, repo.Put(ctx, inst.ManifestName(m.ID), bytes.NewReader(b)))
	_, err = repository.ReadManifest(ctx, repo, inst, m.ID, nil)
	require.ErrorIs(t, err, repository.ErrTooLarge)
	require.ErrorIs(t, err, repository.ErrBadManifest)
}
