package bench_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pglogship/pglogship/internal/testenv"
)

// corpusSegments is 1 GiB of real WAL.
const corpusSegments = 64

// rounds is how many times each contender runs, in turning order.
func rounds(b *testing.B) int {
	n := 3
	if s := os.Getenv("PGLOGSHIP_BENCH_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("PGLOGSHIP_BENCH_ROUNDS=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// contender is one way of doing the benchmark's work. run does it once
// and returns what it measured besides time.
type contender struct {
	name string
	run  func(round int) result
}

type result struct {
	elapsed time.Duration
	stored  int64 // bytes in the repository, 0 when not measured
	peakKiB int64 // summed resident memory of its processes, 0 when not measured
	// hostKiB and guestKiB split peakKiB for ours: the host process, the
	// runtime.
	hostKiB, guestKiB int64
	// CPU time of the shipping's guest side (our runtime, the peer's
	// processes) and of the host (the process that ships, or receives),
	// 0 when not measured.
	guestCPU, hostCPU time.Duration
}

// tally is what all rounds of one contender measured.
type tally struct {
	times             []time.Duration
	stored            int64
	peak              int64
	guestCPU, hostCPU []time.Duration
}

// cpuMean is the mean of the CPU times measured, 0 when none was.
func cpuMean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// machineCPU is the CPU time every process of the machine has used (user,
// nice, system, irq and softirq from /proc/stat).
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func (t *tally) mean() time.Duration {
	var sum time.Duration
	for _, d := range t.times {
		sum += d
	}
	return sum / time.Duration(len(t.times))
}

// race runs every contender once per round, the order turning each round,
// and returns their tallies by name.
func race(b *testing.B, cs []contender) map[string]*tally {
	b.Helper()
	out := map[string]*tally{}
	for _, c := range cs {
		out[c.name] = &tally{}
	}
	n := rounds(b)
	for r := 0; r < n; r++ {
		for i := range cs {
			c := cs[(i+r)%len(cs)]
			res := c.run(r)
			t := out[c.name]
			t.times = append(t.times, res.elapsed)
			t.stored = max(t.stored, res.stored)
			t.peak = max(t.peak, res.peakKiB)
			if res.guestCPU > 0 {
				t.guestCPU = append(t.guestCPU, res.guestCPU)
				t.hostCPU = append(t.hostCPU, res.hostCPU)
			}
			b.Logf("round %d: %-28s %8.3f s", r+1, c.name, res.elapsed.Seconds())
		}
	}
	return out
}

// table collects a benchmark's summary rows and appends them to the file
// named by PGLOGSHIP_BENCH_TABLE, if set, and to the log.
type table struct {
	b     *testing.B
	title string
	rows  []string
}

func newTable(b *testing.B, title string, header ...string) *table {
	t := &table{b: b, title: title}
	t.row(header...)
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = "---"
	}
	t.row(seps...)
	return t
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, "| "+strings.Join(cells, " | ")+" |") }

var tableMu sync.Mutex

func (t *table) flush() {
	text := fmt.Sprintf("\n### %s\n\n%s\n", t.title, strings.Join(t.rows, "\n"))
	t.b.Log(text)
	path := os.Getenv("PGLOGSHIP_BENCH_TABLE")
	if path == "" {
		return
	}
	tableMu.Lock()
	defer tableMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.b.Fatal(err)
	}
}

func mib(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func ratio(a, b time.Duration) string { return fmt.Sprintf("%.2f", float64(a)/float64(b)) }

// standIn is a directory that looks like the corpus cluster's data
// directory to pgBackRest (PG_VERSION, global/pg_control) with the corpus
// in pg_wal, owned by the server's OS user; ready adds an archive_status
// .ready file for every segment, as the archiver leaves them.
func standIn(b *testing.B, pg *testenv.Postgres, segs []string, ready bool) string {
	b.Helper()
	dir := filepath.Join(testenv.UserDir(b, pg.OSUser), "data")
	status := filepath.Join(dir, "pg_wal", "archive_status")
	must(b, os.MkdirAll(status, 0o700))
	must(b, os.MkdirAll(filepath.Join(dir, "global"), 0o700))
	copyFile(b, testenv.CorpusControlFile(b, corpusSegments), filepath.Join(dir, "global", "pg_control"))
	version, err := os.ReadFile(filepath.Join(pg.DataDir, "PG_VERSION"))
	must(b, err)
	must(b, os.WriteFile(filepath.Join(dir, "PG_VERSION"), version, 0o600))
	for _, s := range segs {
		copyFile(b, s, filepath.Join(dir, "pg_wal", filepath.Base(s)))
		if ready {
			must(b, os.WriteFile(filepath.Join(status, filepath.Base(s)+".ready"), nil, 0o600))
		}
	}
	chownTo(b, pg, dir)
	return dir
}

// markReady (re)creates the .ready files of segs in a stand-in.
func markReady(b *testing.B, pg *testenv.Postgres, dir string, segs []string) {
	b.Helper()
	status := filepath.Join(dir, "pg_wal", "archive_status")
	for _, s := range segs {
		os.Remove(filepath.Join(status, filepath.Base(s)+".done"))
		must(b, os.WriteFile(filepath.Join(status, filepath.Base(s)+".ready"), nil, 0o600))
	}
	chownTo(b, pg, status)
}

func copyFile(b *testing.B, from, to string) {
	b.Helper()
	data, err := os.ReadFile(from)
	must(b, err)
	must(b, os.WriteFile(to, data, 0o600))
}

// chownTo hands a tree to the server's OS user.
func chownTo(b *testing.B, pg *testenv.Postgres, dir string) {
	b.Helper()
	if os.Geteuid() != 0 {
		return
	}
	if out, err := exec.Command("chown", "-R", pg.OSUser+":", dir).CombinedOutput(); err != nil {
		b.Fatalf("chown %s: %v\n%s", dir, err, out)
	}
}

// duSize sums the sizes of the regular files under dir.
func duSize(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	must(b, filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	}))
	return n
}

// runScript runs a sh script as the server's OS user in dir, timing it
// whole, with the summed memory of the processes holding marker sampled
// meanwhile when sample is set (sampling costs CPU, so timed rounds leave it
// off).
func runScript(b *testing.B, pg *testenv.Postgres, dir, script, marker string, sample bool) result {
	b.Helper()
	f := filepath.Join(testenv.UserDir(b, pg.OSUser), "script.sh")
	must(b, os.WriteFile(f, []byte(script), 0o755))
	chownTo(b, pg, filepath.Dir(f))
	cmd := pg.Command("/bin/sh", f)
	cmd.Dir = dir
	var s *testenv.RSSSampler
	if sample {
		s = testenv.SampleRSS(2*time.Millisecond, nil, marker)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := result{elapsed: time.Since(start)}
	if s != nil {
		res.peakKiB = s.Stop()
	}
	if err != nil {
		b.Fatalf("%s: %v\n%s", script[:min(len(script), 300)], err, out)
	}
	return res
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// peerRuns tells whether pgBackRest can be compared on pg's release (make
// bench BENCH_PG=...), and logs the release and, if not, why its rows are
// left out.
func peerRuns(b *testing.B, pg *testenv.Postgres) bool {
	b.Helper()
	major := pg.Major(b)
	b.Logf("PostgreSQL %d: %s", major, pg.Psql(b, "postgres", "SELECT version()"))
	ok, why := testenv.PgBackRestSupports(b, major)
	if !ok {
		b.Logf("%s: its rows are left out", why)
	}
	return ok
}

// ratioOr is ratio(a, b), or "-" without a baseline a.
func ratioOr(a, b time.Duration) string {
	if a == 0 {
		return "-"
	}
	return ratio(a, b)
}

// asyncPeer is pgBackRest as the asynchronous peer of the shipping and
// fetching comparisons: process-max 2, zst at its default level.
func asyncPeer(b *testing.B, pg *testenv.Postgres) *testenv.PgBackRest {
	b.Helper()
	return testenv.NewPgBackRest(b, pg, testenv.PgBackRestConfig{Settings: map[string]string{
		"archive-async": "y", "process-max": "2", "compress-type": "zst",
	}})
}

// repoHostPeer is pgBackRest pushing through a repository host over SSH
// (repo1-host), its own "through a backup server" mode, asynchronously
// with process-max 2 and zst like asyncPeer. The repository host is sshd
// on loopback as the server's OS user, with a posix repository whose
// stanza is created there; the database side reaches it with a key and a
// known_hosts of its own (cmd-ssh). It returns the database side and the
// repository's folder.
func repoHostPeer(b *testing.B, pg *testenv.Postgres, sshd *testenv.SSHD) (*testenv.PgBackRest, string) {
	b.Helper()
	const stanza = "repohost"
	repoSide := testenv.NewPgBackRest(b, pg, testenv.PgBackRestConfig{Stanza: stanza,
		Settings: map[string]string{"process-max": "2", "compress-type": "zst"}})
	dir := testenv.UserDir(b, pg.OSUser)
	key, err := os.ReadFile(sshd.ClientKeyFile)
	must(b, err)
	must(b, os.WriteFile(filepath.Join(dir, "id"), key, 0o600))
	must(b, os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(sshd.KnownHostsLine+"\n"), 0o600))
	wrapper := fmt.Sprintf("#!/bin/sh\nexec ssh -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes \"$@\"\n",
		filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts"))
	must(b, os.WriteFile(filepath.Join(dir, "ssh"), []byte(wrapper), 0o755))
	chownTo(b, pg, dir)
	host, port, err := net.SplitHostPort(sshd.Addr)
	must(b, err)
	dbSide := testenv.NewPgBackRest(b, pg, testenv.PgBackRestConfig{Stanza: stanza, NoStanza: true, Settings: map[string]string{
		"archive-async": "y", "process-max": "2", "compress-type": "zst",
		"repo1-host": host, "repo1-host-port": port, "repo1-host-user": sshd.User, "repo1-host-cmd": repoSide.Bin,
		"repo1-host-config": repoSide.Config, "repo1-host-config-include-path": filepath.Join(repoSide.Dir, "conf.d"),
		"repo1-path": repoSide.Repo, "cmd-ssh": filepath.Join(dir, "ssh"),
	}})
	return dbSide, repoSide.Repo
}
