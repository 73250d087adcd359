package walbackup_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/walbackup"
)

// magicFuture hands a segment to the WAL summarizer with a page magic no
// release the reader knows writes (0xD1FF) in its first page, as
// PostgreSQL 18's 0xD118 was before the reader supported 18. Only what
// the summarizer reads is changed.
type magicFuture struct {
	w   io.Writer
	off int
}

func (m *magicFuture) Write(p []byte) (int, error) {
	b := p
	if m.off < 2 {
		b = append([]byte(nil), p...)
		for i := 0; i < len(b) && m.off+i < 2; i++ {
			b[i] = []byte{0xFF, 0xD1}[m.off+i]
		}
	}
	m.off += len(p)
	if _, err := m.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WAL whose summaries cannot be computed (every segment of the workload,
// shipped after the restore point, reads to the summarizer as a release's
// the reader does not know, as 18's did before it knew 18) is unknown, not
// empty: the session
// warns with the reason when it ships it, Interval names the range and
// the reason, and restores to times, a named restore point and a
// transaction in it succeed row for row instead of being refused with
// "no commit shipped after it" or "no restore point named". A time after
// the last commit is then refused by PostgreSQL itself, with its reason,
// and what the restore wrote is moved aside, named as failed.
func TestRestoreThroughUnknownSummaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var unreadable atomic.Bool
	var mu sync.Mutex
	var warnings []string
	f := newPITRFixture(t, pitrWorkload{txns: layoutTxns,
		tweak: func(c *walbackup.Config) {
			walbackup.SetSummaryFilter(c, func(segment string, w io.Writer) io.Writer {
				if !unreadable.Load() {
					return w
				}
				return &magicFuture{w: w}
			})
			observe := c.Observer
			c.Observer = func(e walbackup.Event) {
				if e.Kind == walbackup.EventWarning {
					mu.Lock()
					warnings = append(warnings, e.Message)
					mu.Unlock()
				}
				observe(e)
			}
		},
		during: func(t *testing.T, f *pitrFixture, conn *pgx.Conn, i int) {
			if i == 0 {
				unreadable.Store(true) // the restore point and its WAL are shipped
			}
		}})

	mu.Lock()
	var warned string
	for _, w := range warnings {
		if strings.Contains(w, "WAL summary") {
			warned = w
		}
	}
	mu.Unlock()
	require.NotEmpty(t, warned, "a warning when the WAL is shipped")
	assert.Contains(t, warned, "unsupported page magic D1FF", "naming the reason")

	iv, err := f.job.Interval(ctx, "db1", 0)
	require.NoError(t, err)
	require.NotEmpty(t, iv.Unknown)
	assert.Contains(t, iv.Unknown[0].Reason, "page magic D1FF")
	assert.True(t, iv.Latest.Time.Before(f.txns[0].commit), "no commit of the workload is known: %s", iv)

	plan, err := f.job.Plan(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.ToTime(f.txns[len(f.txns)/2].commit)})
	require.NoError(t, err, "not the untrue \"no commit shipped after it\"")
	assert.False(t, plan.Proven)

	f.restoreAtRandom(t, 21, 3, nil, nil)
	t.Run("named restore point", func(t *testing.T) { f.restoreChecked(t, walbackup.ToName("before the purge"), f.namedAt, nil) })
	t.Run("transaction", func(t *testing.T) {
		k := len(f.txns) / 3
		f.restoreChecked(t, walbackup.ToXID(f.txns[k].xid), k+1, nil)
	})
	t.Run("after the last commit", func(t *testing.T) {
		target := f.txns[len(f.txns)-1].commit.Add(time.Second)
		for time.Now().Before(target) {
			time.Sleep(100 * time.Millisecond) // not a target in the future
		}
		dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "restored")
		pg := testenv.PostgresFor(t, dir, f.pg)
		_, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.ToTime(target)},
			walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: walbackup.RecoveryOptions{
				Port: pg.Port, SocketDir: pg.SocketDir, OSUser: f.pg.OSUser, Settings: map[string]string{"listen_addresses": "127.0.0.1"}}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "recovery ended before configured recovery target was reached", "PostgreSQL's own reason")
		assert.Contains(t, err.Error(), ".failed-", "the error says where what it wrote went")
		assert.NoDirExists(t, dir)
		failed, _ := filepath.Glob(dir + ".failed-*")
		require.Len(t, failed, 1)
		_, err = os.Stat(filepath.Join(failed[0], "PG_VERSION"))
		assert.NoError(t, err, "kept for inspection")
	})
}
