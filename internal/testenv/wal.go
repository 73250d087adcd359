package testenv

import (
	"fmt"
	"testing"
	"time"
)

// SwitchWAL writes a little data and switches to a new WAL segment n times,
// then waits until the archiver has archived the last one, so the archive
// holds still afterwards. It returns the name of that last segment.
func (p *Postgres) SwitchWAL(t testing.TB, n int) string {
	t.Helper()
	p.Exec(t, "postgres", "CREATE TABLE IF NOT EXISTS testenv_switch (x int)")
	var last string
	for i := 0; i < n; i++ {
		p.Exec(t, "postgres", fmt.Sprintf("INSERT INTO testenv_switch SELECT generate_series(1, %d)", 1000*(i+1)))
		last = p.Psql(t, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")
	}
	deadline := time.Now().Add(time.Minute)
	for p.Psql(t, "postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < last {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: segment %s not archived within a minute", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}
