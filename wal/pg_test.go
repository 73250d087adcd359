package wal_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/wal"
)

// realWAL is WAL archived by a real server from a workload the test
// controls, and what the workload did according to the server.
type realWAL struct {
	pg       *testenv.Postgres
	dir      string
	segments []string // names, in order
	segSize  int64
	version  int

	commits       map[uint32]time.Time // xid: pg_xact_commit_timestamp
	aborted       []uint32
	restorePoints map[string]wal.LSN // name: what pg_create_restore_point returned
	switchEnd     wal.LSN            // what the last pg_switch_wal returned
	compression   []string           // wal_compression methods the server took
}

// archiveRealWAL starts a server archiving into a folder, runs a workload
// with every kind of record the Reader must get right, switches and waits
// until the archive holds everything.
func archiveRealWAL(t *testing.T, major int) *realWAL {
	t.Helper()
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Major: major, Settings: map[string]string{
		"track_commit_timestamp":    "on",
		"max_prepared_transactions": "4",
		"max_wal_size":              "1GB", // no checkpoint but ours
	}})
	w := &realWAL{pg: pg, dir: testenv.UserDir(t, pg.OSUser), commits: map[uint32]time.Time{},
		restorePoints: map[string]wal.LSN{}, segSize: 16 << 20}
	pg.Exec(t, "postgres", fmt.Sprintf("ALTER SYSTEM SET archive_command = 'cp %%p %s/%%f'", w.dir))
	pg.Exec(t, "postgres", "SELECT pg_reload_conf()")
	v, err := strconv.Atoi(pg.Psql(t, "postgres", "SHOW server_version_num"))
	require.NoError(t, err)
	w.version = v

	ctx := context.Background()
	conn := pg.Connect(t, "postgres")
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, sql, args...)
		require.NoError(t, err, sql)
	}
	// tx runs stmts in a transaction that ends with end and returns its xid.
	tx := func(end string, stmts ...string) uint32 {
		t.Helper()
		exec("BEGIN")
		for _, s := range stmts {
			exec(s)
		}
		var xid uint32
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xid))
		exec(end)
		if end == "COMMIT" {
			var ts time.Time
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_xact_commit_timestamp($1::text::xid)", strconv.Itoa(int(xid))).Scan(&ts))
			w.commits[xid] = ts
		} else {
			w.aborted = append(w.aborted, xid)
		}
		return xid
	}
	restorePoint := func(name string) {
		t.Helper()
		var lsn string
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_create_restore_point($1)::text", name).Scan(&lsn))
		w.restorePoints[name], err = wal.ParseLSN(lsn)
		require.NoError(t, err)
	}

	exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
	exec("CREATE TABLE wide (v text)")
	exec("ALTER TABLE wide ALTER v SET STORAGE PLAIN")
	tx("COMMIT", "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	restorePoint("after load")
	for i := range 20 {
		tx("COMMIT", fmt.Sprintf("UPDATE t SET v = v || 'u' WHERE id %% 20 = %d", i),
			fmt.Sprintf("DELETE FROM t WHERE id = %d", 19000+i))
		if i%5 == 0 {
			tx("ROLLBACK", fmt.Sprintf("INSERT INTO t VALUES (%d, 'rolled back')", 100000+i))
		}
	}
	// Subtransactions, some rolled back.
	tx("COMMIT", "SAVEPOINT a", "INSERT INTO t VALUES (200001, 'sub')", "RELEASE a",
		"SAVEPOINT b", "INSERT INTO t VALUES (200002, 'sub')", "ROLLBACK TO b", "INSERT INTO t VALUES (200003, 'top')")
	// Full-page images, compressed every way the server can.
	for _, method := range []string{"off", "pglz", "lz4", "zstd"} {
		if _, err := conn.Exec(ctx, "SET wal_compression = "+method); err != nil {
			t.Logf("wal_compression %s: %v", method, err)
			continue
		}
		w.compression = append(w.compression, method)
		exec("CHECKPOINT")
		tx("COMMIT", "UPDATE t SET v = v || 'f' WHERE id % 7 = 0")
	}
	restorePoint("after images")
	// Rows of 7000 bytes: records that span pages.
	tx("COMMIT", "INSERT INTO wide SELECT repeat(chr(65 + g % 26), 7000) FROM generate_series(1, 30) g")
	// Two-phase commit.
	exec("BEGIN")
	exec("INSERT INTO t VALUES (300001, 'prepared')")
	exec("PREPARE TRANSACTION 'g1'")
	exec("COMMIT PREPARED 'g1'")
	exec("BEGIN")
	exec("INSERT INTO t VALUES (300002, 'prepared, rolled back')")
	exec("PREPARE TRANSACTION 'g2'")
	exec("ROLLBACK PREPARED 'g2'")
	// A long transaction, and records of 1 MB and 20 MB: the last spans
	// a segment boundary.
	tx("COMMIT", "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(400000, 430000) g",
		"SELECT pg_logical_emit_message(true, 'pglogship', repeat('m', 1000000))")
	exec("SELECT pg_logical_emit_message(false, 'pglogship', repeat('n', 20000000))")
	restorePoint("last")
	tx("COMMIT", "INSERT INTO t VALUES (600000, 'last')")

	var end, last string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_switch_wal()::text").Scan(&end))
	w.switchEnd, err = wal.ParseLSN(end)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_walfile_name($1::pg_lsn)", end).Scan(&last))
	deadline := time.Now().Add(time.Minute)
	for pg.Psql(t, "postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < last {
		require.True(t, time.Now().Before(deadline), "segment %s not archived within a minute", last)
		time.Sleep(100 * time.Millisecond)
	}
	entries, err := os.ReadDir(w.dir)
	require.NoError(t, err)
	for _, e := range entries {
		if f, err := wal.ParseFileName(e.Name()); err == nil && f.Kind == wal.Segment {
			w.segments = append(w.segments, e.Name())
		}
	}
	slices.Sort(w.segments)
	require.Equal(t, last, w.segments[len(w.segments)-1])
	return w
}

func (w *realWAL) path(name string) string { return filepath.Join(w.dir, name) }

// scan reads the segments with a Reader and returns its records (main
// data cut to 8 bytes) and per-segment summaries.
func scan(t *testing.T, dir string, names []string) ([]wal.Record, []wal.Summary, *wal.Reader) {
	t.Helper()
	var recs []wal.Record
	r, err := wal.NewReader(wal.ReaderConfig{OnRecord: func(rec *wal.Record) error {
		c := *rec
		c.MainData = slices.Clone(rec.MainData[:min(8, len(rec.MainData))])
		recs = append(recs, c)
		return nil
	}})
	require.NoError(t, err)
	var sums []wal.Summary
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		require.NoError(t, err)
		sum, err := r.Feed(name, f)
		f.Close()
		require.NoError(t, err)
		sums = append(sums, sum)
	}
	return recs, sums, r
}

// dumped is one record as pg_waldump prints it.
type dumped struct {
	rmgr     string
	totalLen uint32
	xid      uint32
	lsn, prv wal.LSN
	desc     string
}

var dumpLine = regexp.MustCompile(`^rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+), tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev ([0-9A-F]+/[0-9A-F]+), desc: (.*)$`)

// waldump runs pg_waldump (with block details) over the segments from first to last in dir and
// returns its records and its final error message, if any.
func waldump(t *testing.T, binDir, dir, first, last string) ([]dumped, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pg_waldump"), "--bkp-details", "-p", dir, first, last)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		require.IsType(t, &exec.ExitError{}, err, "pg_waldump: %v", err)
	}
	var recs []dumped
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "\t") { // --bkp-details: a block reference of the record above
			recs[len(recs)-1].desc += ";" + line[1:]
			continue
		}
		m := dumpLine.FindStringSubmatch(line)
		require.NotNil(t, m, "pg_waldump line %q", line)
		tot, _ := strconv.ParseUint(m[2], 10, 32)
		xid, _ := strconv.ParseUint(m[3], 10, 32)
		lsn, err := wal.ParseLSN(m[4])
		require.NoError(t, err)
		prv, err := wal.ParseLSN(m[5])
		require.NoError(t, err)
		recs = append(recs, dumped{rmgr: m[1], totalLen: uint32(tot), xid: uint32(xid), lsn: lsn, prv: prv, desc: m[6]})
	}
	return recs, strings.TrimSpace(stderr.String())
}

var waldumpTime = regexp.MustCompile(`(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?) UTC`)

func parseWaldumpTime(t *testing.T, desc string) time.Time {
	t.Helper()
	m := waldumpTime.FindStringSubmatch(desc)
	require.NotNil(t, m, "no time in %q", desc)
	ts, err := time.Parse("2006-01-02 15:04:05.999999", m[1])
	require.NoError(t, err)
	return ts
}

// The Reader against pg_waldump and the server, over the WAL of a workload
// with every kind of record.
func TestReaderMatchesPostgres(t *testing.T) {
	w := archiveRealWAL(t, 0)
	first, last := w.segments[0], w.segments[len(w.segments)-1]
	recs, sums, r := scan(t, w.dir, w.segments)
	total := r.Summary()
	dump, dumpErr := waldump(t, w.pg.BinDir, w.dir, first, last)
	t.Logf("%d segments %s..%s: %d records; pg_waldump %d records, ending %q; wal_compression %v",
		len(w.segments), first, last, len(recs), len(dump), dumpErr, w.compression)

	// Record by record.
	require.Equal(t, len(dump), len(recs), "records")
	for i, d := range dump {
		rec := recs[i]
		require.Equal(t, d.lsn, rec.LSN, "record %d", i)
		require.Equal(t, d.prv, rec.Prev, "record %d at %s", i, rec.LSN)
		require.Equal(t, d.totalLen, rec.TotalLen, "record %d at %s", i, rec.LSN)
		require.Equal(t, d.xid, rec.XID, "record %d at %s", i, rec.LSN)
		if i+1 < len(dump) && !strings.HasPrefix(d.desc, "SWITCH") {
			next := dump[i+1].lsn
			if rec.End%8192 == 0 {
				next -= wal.LSN(headerSize(next))
			}
			require.Equal(t, next, rec.End, "record %d at %s ends where the next begins", i, rec.LSN)
		}
	}

	// The summary.
	var commits, aborts int64
	var times []time.Time
	var maxXID uint32
	var points []wal.RestorePoint
	for _, d := range dump {
		maxXID = max(maxXID, d.xid)
		if d.rmgr == "Transaction" {
			switch op, _, _ := strings.Cut(d.desc, " "); op {
			case "COMMIT", "COMMIT_PREPARED":
				commits++
				times = append(times, parseWaldumpTime(t, d.desc))
			case "ABORT", "ABORT_PREPARED":
				aborts++
			}
		}
		if name, ok := strings.CutPrefix(d.desc, "RESTORE_POINT "); ok {
			points = append(points, wal.RestorePoint{Name: name, LSN: d.lsn})
		}
	}
	assert.Equal(t, commits, total.Commits)
	assert.Equal(t, aborts, total.Aborts)
	assert.Equal(t, slices.MinFunc(times, time.Time.Compare), total.FirstCommit)
	assert.Equal(t, slices.MaxFunc(times, time.Time.Compare), total.LastCommit)
	assert.Equal(t, maxXID, total.MaxXID)
	require.Len(t, total.RestorePoints, len(points))
	for i, p := range points {
		got := total.RestorePoints[i]
		assert.Equal(t, p.Name, got.Name)
		assert.Equal(t, p.LSN, got.LSN)
		assert.Equal(t, w.restorePoints[p.Name], got.End, "pg_create_restore_point returned the end of %s", p.Name)
		assert.WithinDuration(t, time.Now(), got.Time, time.Hour)
	}
	assert.Len(t, points, len(w.restorePoints))
	assert.Equal(t, dump[0].lsn, total.First)
	assert.Equal(t, dump[len(dump)-1].lsn, total.Last)
	assert.True(t, strings.HasPrefix(dump[len(dump)-1].desc, "SWITCH"))
	assert.Equal(t, w.switchEnd, total.End, "pg_switch_wal returned the end of the last record")
	assert.Nil(t, total.Stop, "nothing invalid in archived segments")
	merged := wal.Summary{}
	for _, s := range sums {
		merged = merged.Merge(s)
	}
	assert.Equal(t, total, merged)

	// Commit timestamps, one by one, as pg_waldump prints them and as the
	// server knows them.
	commitTimes := map[uint32]time.Time{}
	abortedXIDs := map[uint32]bool{}
	var ours []time.Time
	for _, rec := range recs {
		if rec.Rmid != wal.RmgrXact {
			continue
		}
		switch rec.Info & 0x70 {
		case 0x00, 0x30: // commit, commit prepared
			us := int64(binary.LittleEndian.Uint64(rec.MainData))
			ts := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(us) * time.Microsecond)
			ours = append(ours, ts)
			commitTimes[rec.XID] = ts
		case 0x20: // abort
			abortedXIDs[rec.XID] = true
		}
	}
	assert.Equal(t, times, ours)
	for xid, ts := range w.commits {
		assert.True(t, ts.Equal(commitTimes[xid]), "xid %d committed at %s, WAL says %s", xid, ts, commitTimes[xid])
	}
	for _, xid := range w.aborted {
		assert.True(t, abortedXIDs[xid], "xid %d aborted", xid)
	}

	// The workload reached what it was meant to.
	var spansSegment, spansPage bool
	for _, rec := range recs {
		spansSegment = spansSegment || rec.LSN/wal.LSN(w.segSize) != (rec.End-1)/wal.LSN(w.segSize)
		spansPage = spansPage || rec.LSN/8192 != (rec.End-1)/8192
	}
	assert.True(t, spansSegment, "a record spans segments")
	assert.True(t, spansPage, "a record spans pages")
	var methods []string
	for _, d := range dump {
		for _, m := range imageMethod.FindAllStringSubmatch(d.desc, -1) {
			if !slices.Contains(methods, m[1]) {
				methods = append(methods, m[1])
			}
		}
	}
	t.Logf("compressed full-page images: %v; commits %d (%s .. %s), aborts %d, max xid %d, restore points %d, end %s",
		methods, total.Commits, total.FirstCommit.Format(time.RFC3339Nano), total.LastCommit.Format(time.RFC3339Nano),
		total.Aborts, total.MaxXID, len(total.RestorePoints), total.End)
	assert.GreaterOrEqual(t, len(methods), len(w.compression)-1, "every compression the server took ('off' is none)")

	t.Run("mid-stream", func(t *testing.T) { testMidStream(t, w, recs) })
	t.Run("tail", func(t *testing.T) { testTail(t, w, recs) })
	t.Run("corrupt", func(t *testing.T) { testCorrupt(t, w, recs) })
}

// The Reader on the WAL of every supported release, against what the
// server itself says (pg_waldump is not in every release's tree, and
// TestReaderMatchesPostgres compares record by record on Debian's): the
// commit time of every committed transaction, every abort, every named
// restore point, the end of the WAL, and nothing found invalid.
func TestReaderOnEveryRelease(t *testing.T) {
	for _, major := range testenv.SupportedMajors {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			t.Parallel()
			w := archiveRealWAL(t, major)
			require.Equal(t, major, w.version/10000)
			recs, _, r := scan(t, w.dir, w.segments)
			total := r.Summary()
			assert.Nil(t, total.Stop, "nothing invalid in archived segments")
			assert.Equal(t, w.switchEnd, total.End)
			commitTimes := map[uint32]time.Time{}
			abortedXIDs := map[uint32]bool{}
			for _, rec := range recs {
				if rec.Rmid != wal.RmgrXact {
					continue
				}
				switch rec.Info & 0x70 {
				case 0x00, 0x30:
					us := int64(binary.LittleEndian.Uint64(rec.MainData))
					commitTimes[rec.XID] = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(us) * time.Microsecond)
				case 0x20:
					abortedXIDs[rec.XID] = true
				}
			}
			for xid, ts := range w.commits {
				assert.True(t, ts.Equal(commitTimes[xid]), "xid %d committed at %s, WAL says %s", xid, ts, commitTimes[xid])
			}
			for _, xid := range w.aborted {
				assert.True(t, abortedXIDs[xid], "xid %d aborted", xid)
			}
			require.Len(t, total.RestorePoints, len(w.restorePoints))
			for _, p := range total.RestorePoints {
				assert.Equal(t, w.restorePoints[p.Name], p.End, p.Name)
			}
			assert.GreaterOrEqual(t, total.Commits, int64(len(w.commits)))
			t.Logf("PostgreSQL %d: %d segments, %d records, %d commits, %d aborts, restore points %d, wal_compression %v",
				w.version, len(w.segments), len(recs), total.Commits, total.Aborts, len(total.RestorePoints), w.compression)
		})
	}
}

var imageMethod = regexp.MustCompile(`compression saved: \d+, method: (\w+)`)

func headerSize(lsn wal.LSN) int {
	if lsn%(16<<20) < 8192 {
		return 40
	}
	return 24
}

// Starting at a segment whose first page continues a record: the Reader
// and pg_waldump both begin after it.
func testMidStream(t *testing.T, w *realWAL, all []wal.Record) {
	tested := 0
	for from, name := range w.segments {
		b := make([]byte, 4)
		f, err := os.Open(w.path(name))
		require.NoError(t, err)
		_, err = f.ReadAt(b, 0)
		f.Close()
		require.NoError(t, err)
		if binary.LittleEndian.Uint16(b[2:])&1 == 0 {
			continue
		}
		tested++
		fn, err := wal.ParseFileName(name)
		require.NoError(t, err)
		segStart := fn.StartLSN(w.segSize)
		i := slices.IndexFunc(all, func(rec wal.Record) bool { return rec.End > segStart })
		require.Less(t, all[i].LSN, segStart, "a record continues into %s", name)
		inProgress := all[i]

		recs, _, r := scan(t, w.dir, w.segments[from:])
		dump, _ := waldump(t, w.pg.BinDir, w.dir, name, w.segments[len(w.segments)-1])
		require.Len(t, recs, len(dump))
		require.NotEmpty(t, recs)
		assert.Equal(t, dump[0].lsn, recs[0].LSN)
		assert.Equal(t, all[i+1:], recs, "from %s: every record after the one in progress", name)
		assert.Equal(t, all[len(all)-1].End, r.Summary().End)
		t.Logf("from %s: skipped the %d-byte record at %s, first record %s", name, inProgress.TotalLen, inProgress.LSN, recs[0].LSN)
	}
	require.Positive(t, tested, "a segment starts with a continuation")
}

// A segment cut short, or zeroed after some point as a .partial file is:
// valid WAL stops there, cleanly.
func testTail(t *testing.T, w *realWAL, all []wal.Record) {
	name := w.segments[len(w.segments)-2]
	f, err := wal.ParseFileName(name)
	require.NoError(t, err)
	segStart := f.StartLSN(w.segSize)
	var inside []wal.Record
	for _, rec := range all {
		if rec.LSN >= segStart && rec.End < segStart+wal.LSN(w.segSize) {
			inside = append(inside, rec)
		}
	}
	require.Greater(t, len(inside), 10)
	data, err := os.ReadFile(w.path(name))
	require.NoError(t, err)
	dir := t.TempDir()

	// Zeros after a record.
	keep := inside[len(inside)/2]
	zeroed := slices.Clone(data)
	clear(zeroed[keep.End-segStart:])
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".partial"), zeroed, 0o600))
	dumpDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dumpDir, name), zeroed, 0o600))
	recs, sums, _ := scan(t, dir, []string{name + ".partial"})
	require.NotEmpty(t, recs)
	assert.Equal(t, keep, recs[len(recs)-1])
	require.NotNil(t, sums[0].Stop)
	assert.Equal(t, keep.End, sums[0].Stop.LSN)
	assert.Contains(t, sums[0].Stop.Reason, "invalid record length")
	t.Logf("zeroed after %s: %q", keep.End, sums[0].Stop.Reason)
	_, dumpErr := waldump(t, w.pg.BinDir, dumpDir, name, name)
	assert.Contains(t, dumpErr, "invalid record length at "+keep.End.String(), "pg_waldump stops there too")

	// A file cut in the middle of a record.
	cutRec := inside[len(inside)/3]
	cut := data[:cutRec.LSN-segStart+10]
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), cut, 0o600))
	recs, sums, _ = scan(t, dir, []string{name})
	require.NotEmpty(t, recs)
	assert.Less(t, recs[len(recs)-1].LSN, cutRec.LSN)
	require.NotNil(t, sums[0].Stop)
	assert.Equal(t, cutRec.LSN, sums[0].Stop.LSN)
	t.Logf("cut in %s: %q", cutRec.LSN, sums[0].Stop.Reason)
}

// A flipped byte fails the record's CRC: the Reader stops at that record
// and says where, as pg_waldump does.
func testCorrupt(t *testing.T, w *realWAL, all []wal.Record) {
	name := w.segments[len(w.segments)-2]
	f, err := wal.ParseFileName(name)
	require.NoError(t, err)
	segStart := f.StartLSN(w.segSize)
	var victim wal.Record
	for _, rec := range all {
		if rec.LSN > segStart+1<<20 && rec.End < segStart+wal.LSN(w.segSize) && rec.TotalLen > 100 && rec.LSN%8192 > 40 && rec.LSN%8192+100 < 8192 {
			victim = rec
			break
		}
	}
	require.NotZero(t, victim.LSN)
	data, err := os.ReadFile(w.path(name))
	require.NoError(t, err)
	data[victim.LSN-segStart+60] ^= 0x01
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	recs, sums, _ := scan(t, dir, []string{name})
	require.NotEmpty(t, recs)
	assert.Less(t, recs[len(recs)-1].LSN, victim.LSN)
	assert.Equal(t, victim.LSN, recs[len(recs)-1].End, "every record before it")
	require.NotNil(t, sums[0].Stop)
	assert.Equal(t, wal.Stop{LSN: victim.LSN, Reason: "incorrect resource manager data checksum in record at " + victim.LSN.String()}, *sums[0].Stop)
	_, dumpErr := waldump(t, w.pg.BinDir, dir, name, name)
	assert.Contains(t, dumpErr, sums[0].Stop.Reason, "pg_waldump says the same")
}
