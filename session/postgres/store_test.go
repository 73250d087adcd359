package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/session/sessiontest"
)

func open(t testing.TB, cfg postgres.Config) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := postgres.Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	return st
}

// The store passes its suite (migrations, leases, pins) with every
// supported release as the configuration database.
func TestConformance(t *testing.T) {
	testenv.SkipIfShort(t)
	for _, major := range testenv.SupportedMajors {
		t.Run(fmt.Sprintf("PostgreSQL %d", major), func(t *testing.T) {
			t.Parallel()
			conformance(t, testenv.PostgresConfig{Major: major})
		})
	}
}

func conformance(t *testing.T, cfg testenv.PostgresConfig) {
	pg := testenv.StartPostgres(t, cfg)
	t.Log(pg.Psql(t, "postgres", "SELECT version()"))
	pg.CreateDatabase(t, "config")
	dsn := pg.ConnString("config")
	var n atomic.Int64
	schemas := map[session.Store]string{}
	var mu sync.Mutex
	sessiontest.Run(t, sessiontest.Harness{
		New: func(t testing.TB) session.Store {
			// A fresh schema per subtest keeps them apart on one server.
			schema := fmt.Sprintf("suite_%d", n.Add(1))
			st := open(t, postgres.Config{ConnString: dsn, Schema: schema})
			mu.Lock()
			schemas[st] = schema
			mu.Unlock()
			return st
		},
		Peer: func(t testing.TB, s session.Store) session.Store {
			mu.Lock()
			schema := schemas[s]
			mu.Unlock()
			return open(t, postgres.Config{ConnString: dsn, Schema: schema})
		},
	})
}

// Two processes starting at once both migrate the same empty schema.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	dsn := pg.ConnString("postgres")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := postgres.Open(context.Background(), postgres.Config{ConnString: dsn, Schema: "race"})
			if err == nil {
				st.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	out := pg.Psql(t, "postgres", `select count(*), max(version) from race.schema_migrations`)
	assert.Equal(t, fmt.Sprintf("%d|%d", postgres.SchemaVersion, postgres.SchemaVersion), strings.TrimSpace(out))
}

func TestSchemaTooNew(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	dsn := pg.ConnString("postgres")
	open(t, postgres.Config{ConnString: dsn}).Close()
	pg.Exec(t, "postgres", `INSERT INTO pglogship.schema_migrations (version) VALUES ($1)`, postgres.SchemaVersion+1)
	_, err := postgres.Open(context.Background(), postgres.Config{ConnString: dsn})
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
}

func TestOpenRefusedConnection(t *testing.T) {
	// A port nothing listens on: grab one, then free it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = postgres.Open(ctx, postgres.Config{ConnString: "postgres://u:secret-pw@" + addr + "/db?sslmode=disable"})
	require.Error(t, err)
	var ce *pgconn.ConnectError
	assert.ErrorAs(t, err, &ce, "the cause is wrapped")
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.NotContains(t, err.Error(), "secret-pw")
}

// A server that accepts and never answers: Open must give up at the
// context's deadline and say so, not hang.
func TestOpenHonoursDeadline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := postgres.Open(ctx, postgres.Config{ConnString: "postgres://u:pw@" + l.Addr().String() + "/db?sslmode=disable"})
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.True(t, errors.Is(err, context.DeadlineExceeded), "want the deadline in the chain, got %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Open ignored its context's deadline")
	}
}

func TestOpenBadConfig(t *testing.T) {
	ctx := context.Background()
	_, err := postgres.Open(ctx, postgres.Config{})
	require.ErrorContains(t, err, "connection string is required")
	_, err = postgres.Open(ctx, postgres.Config{ConnString: "postgres://u:pw@127.0.0.1:1/db", Schema: `x"; drop table y; --`})
	require.ErrorContains(t, err, "invalid schema name")
	_, err = postgres.Open(ctx, postgres.Config{ConnString: "postgres://u:hunter2@127.0.0.1:notaport/db"})
	require.ErrorContains(t, err, "cannot parse connection string")
	assert.NotContains(t, err.Error(), "hunter2")
}

// After the configuration database restarts, every pooled connection is
// dead; the first call of each kind still succeeds (on a new connection),
// reads, writes, fenced writes and lease calls alike.
func TestStoreSurvivesServerRestart(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	st := open(t, postgres.Config{ConnString: pg.ConnString("postgres"), MaxConns: 4})
	ctx := context.Background()
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	l, ok, err := st.AcquireLease(ctx, "job", "host-1", now, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	fenced := st.Fenced(l)
	s, err := fenced.Create(ctx, session.Session{Job: "job", Kind: session.KindChild, State: session.StateWorking, Start: now})
	require.NoError(t, err)
	// Fill the pool with idle connections, which the restart kills.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.Get(ctx, s.ID)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()

	restart := func() {
		out, err := pg.PgCtl("restart", "-m", "fast", "-w", "-l", pg.LogFile)
		require.NoError(t, err, "%s", out)
	}
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"update", func() error { s.Result = "after a restart"; return st.Update(ctx, s) }},
		{"fenced update", func() error { s.Result = "fenced, after a restart"; return fenced.Update(ctx, s) }},
		{"append", func() error {
			_, err := fenced.Append(ctx, s.ID, session.Entry{Time: now, Severity: session.SeverityInfo, Message: "still here"})
			return err
		}},
		{"renew", func() error { _, err := st.RenewLease(ctx, l, now, time.Minute); return err }},
		{"get", func() error { _, err := st.Get(ctx, s.ID); return err }},
		{"list", func() error { _, err := st.List(ctx, session.Query{Job: "job"}); return err }},
		{"enabled", func() error { _, err := st.JobEnabled(ctx, "job"); return err }},
	} {
		restart()
		require.NoError(t, c.call(), "%s: the first call after a restart", c.name)
	}
	got, err := st.Get(ctx, s.ID)
	require.NoError(t, err)
	assert.Equal(t, "fenced, after a restart", got.Result)
	log, err := st.Log(ctx, s.ID, 0, 10)
	require.NoError(t, err)
	require.Len(t, log, 1, "appended once")
}
