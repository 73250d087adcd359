package walbackup_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

// An export of two databases at a point in time: the instance restored to
// a time between two transactions on a scratch server, both databases
// dumped with the guest's own pg_dump (directory format), the scratch
// server gone afterwards; the dumps restored with pg_restore into a fresh
// server hold exactly the rows committed by then, in each database. A
// staging guest without pg_dump of the release gets guest.ErrNoPgDump,
// naming what to install, and nothing stays behind.
func TestExportTwoDatabasesAtAPointInTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var orders []int // the shop transaction of each f.txns index, or -1
	f := newPITRFixture(t, pitrWorkload{
		txns: 40,
		before: func(t *testing.T, f *pitrFixture) {
			f.pg.CreateDatabase(t, "shop")
			f.pg.Exec(t, "shop", "CREATE TABLE orders (id int PRIMARY KEY, item text)")
		},
		during: func(t *testing.T, f *pitrFixture, _ *pgx.Conn, i int) {
			if i%4 != 1 {
				return
			}
			shop := f.pg.Connect(t, "shop")
			defer shop.Close(ctx)
			f.record(inTransaction(t, shop, fmt.Sprintf("INSERT INTO orders VALUES (%d, 'order %d')", i, i)), "order "+strconv.Itoa(i))
			for len(orders) < len(f.txns)-1 {
				orders = append(orders, -1)
			}
			orders = append(orders, i)
		}})
	k := len(f.txns) / 2
	target := f.txns[k].commit
	n := k + 1 // the commits up to and including k's
	var wantOrders []string
	for i, o := range orders {
		if i < n && o >= 0 {
			wantOrders = append(wantOrders, strconv.Itoa(o))
		}
	}
	require.NotEmpty(t, wantOrders)
	require.Less(t, len(wantOrders), strings.Count(f.pg.Psql(t, "shop", "SELECT id FROM orders"), "\n")+1, "orders after the target too")

	staging := func(t *testing.T) (walbackup.RestoreTo, string) {
		dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "scratch")
		scratch := testenv.PostgresFor(t, dir, f.pg)
		return walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: f.recoveryOptions(scratch)},
			filepath.Join(testenv.UserDir(t, f.pg.OSUser), "export")
	}
	to, out := staging(t)
	res, err := f.job.Export(ctx, walbackup.ExportRequest{Machine: "db1", Target: walbackup.ToTime(target),
		Databases: []string{"postgres", "shop"}, Staging: to, Dir: out})
	require.NoError(t, err, "%s", res.Recovery.Log)
	assert.True(t, res.Recovery.Promoted)
	require.Len(t, res.Dumps, 2)
	for i, db := range []string{"postgres", "shop"} {
		assert.Equal(t, db, res.Dumps[i].Database)
		assert.Equal(t, filepath.Join(out, db), res.Dumps[i].Dir)
		assert.FileExists(t, filepath.Join(res.Dumps[i].Dir, "toc.dat"), "pg_dump's directory format")
		assert.Positive(t, res.Dumps[i].Bytes)
	}
	assert.NoDirExists(t, to.Image, "the scratch server is removed")
	rec := lastRestore(t, f.harness)
	assert.Equal(t, session.StateSuccess, rec.State)
	assert.Equal(t, fmt.Sprintf("exported [postgres shop] into %s", out), rec.Result)
	assert.Equal(t, int64(res.Recovery.Fetched), rec.Counters.Files)

	// Into a fresh server of the release, with pg_restore.
	fresh := testenv.StartPostgres(t, testenv.PostgresConfig{})
	u, err := user.Lookup(fresh.OSUser) // pg_restore runs as the server's user
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	require.NoError(t, filepath.WalkDir(out, func(p string, _ fs.DirEntry, err error) error {
		if err == nil {
			err = os.Chown(p, uid, gid)
		}
		return err
	}))
	for _, d := range res.Dumps {
		restored := d.Database + "_restored"
		fresh.CreateDatabase(t, restored)
		outp, err := fresh.Tool("pg_restore", "--no-owner", "-h", fresh.SocketDir, "-p", strconv.Itoa(fresh.Port), "-d", restored, d.Dir)
		require.NoError(t, err, "%s", outp)
	}
	assert.Equal(t, f.want(n), fresh.Psql(t, "postgres_restored", "SELECT id, val FROM items ORDER BY id"),
		"the items committed by %s", target)
	assert.Equal(t, strings.Join(wantOrders, "\n"), fresh.Psql(t, "shop_restored", "SELECT id FROM orders ORDER BY id"),
		"the orders committed by %s", target)

	t.Run("no pg_dump", func(t *testing.T) {
		to, out := staging(t)
		_, err := f.job.Export(ctx, walbackup.ExportRequest{Machine: "db1", Target: walbackup.ToTime(target),
			Databases: []string{"shop"}, Staging: to, Dir: out, BinDir: t.TempDir()})
		require.ErrorIs(t, err, guest.ErrNoPgDump)
		assert.ErrorContains(t, err, fmt.Sprintf("install PostgreSQL %d's client programs", f.pg.Major(t)))
		assert.NoDirExists(t, out, "nothing dumped")
		assert.NoDirExists(t, to.Image, "the scratch server is removed")
		rec := lastRestore(t, f.harness)
		assert.Equal(t, session.StateFailed, rec.State, "the outcome is recorded")
		assert.Contains(t, rec.Result, "install PostgreSQL")
	})
	t.Run("bad requests", func(t *testing.T) {
		to, out := staging(t)
		for name, req := range map[string]walbackup.ExportRequest{
			"no database": {Machine: "db1", Target: walbackup.Latest(), Staging: to, Dir: out},
			"no dir":      {Machine: "db1", Target: walbackup.Latest(), Staging: to, Databases: []string{"shop"}},
			"bad name":    {Machine: "db1", Target: walbackup.Latest(), Staging: to, Dir: out, Databases: []string{"../etc"}},
		} {
			_, err := f.job.Export(ctx, req)
			require.Error(t, err, name)
			assert.NoDirExists(t, out, name)
		}
	})
}

// lastRestore is the newest restore, drill or export session of h's job.
func lastRestore(t *testing.T, h *harness) session.Session {
	t.Helper()
	rec, err := session.Latest(context.Background(), h.store, walbackup.RestoreJobName(h.job.Name()), session.KindRestore)
	require.NoError(t, err)
	return rec
}
