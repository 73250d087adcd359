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
	require.NoError(t, repository.WriteManifest(ctx, repo, inst, &newer))
	require.NoError(t, repository.WriteManifest(ctx, repo, inst, &older))

	ids, err = repository.RestorePointIDs(ctx, repo, inst)
	require.NoError(t, err)
	assert.Equal(t, []string{older.ID, newer.ID}, ids, "committed ones only, oldest first")
	all, err := repository.RestorePoints(ctx, repo, inst)
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.Equal(t, newer.ID, all[1].ID)
	assert.Equal(t, m.BackupLabel, all[1].BackupLabel)

	other := inst
	other.SystemID++
	require.ErrorIs(t, repository.WriteManifest(ctx, repo, other, &newer), repository.ErrBadManifest, "a manifest of another cluster")
	_, err = repository.ReadManifest(ctx, repo, inst, "20261125T000000Z-00000000")
	require.ErrorIs(t, err, repository.ErrNotFound)

	// A manifest stored under another restore point's name is refused.
	b, err := repository.EncodeManifest(&older)
	require.NoError(t, err)
	require.NoError(t, repo.Put(ctx, inst.ManifestName("20261126T000000Z-00000000"), bytes.NewReader(b)))
	_, err = repository.ReadManifest(ctx, repo, inst, "20261126T000000Z-00000000")
	require.ErrorIs(t, err, repository.ErrBadManifest)
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
