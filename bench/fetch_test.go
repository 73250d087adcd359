package bench_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/walbackup"
)

// BenchmarkFetch is the restore side without replay: restore_command run
// once per segment, in WAL order, by one shell loop as the server's OS
// user, each call putting the segment at pg_wal/RECOVERYXLOG as PostgreSQL
// asks. Ours: the runtime's restore service (RestoreService, as Recover
// runs it) with prefetch 8, fetching from a file-system repository the
// corpus was shipped into; against pgBackRest's asynchronous archive-get
// (process-max=2, zst, its default queue of 128 MiB = 8 segments) from a
// posix repository. BenchmarkRecover in walbackup has the whole recovery.
func BenchmarkFetch(b *testing.B) {
	ctx := context.Background()
	segs := testenv.WALCorpus(b, corpusSegments)
	raw := int64(len(segs)) * testenv.CorpusSegmentSize
	pg := testenv.StartCorpusPostgres(b, corpusSegments, testenv.PostgresConfig{})
	data := standIn(b, pg, segs, false)
	var script strings.Builder
	check := func(cmd string, verify bool) string {
		script.Reset()
		for _, s := range segs {
			f := filepath.Base(s)
			fmt.Fprintf(&script, "%s || exit 1\n", strings.NewReplacer("%f", f, "%p", "pg_wal/RECOVERYXLOG").Replace(cmd))
			if verify { // untimed: every segment arrives whole
				fmt.Fprintf(&script, "cmp -s pg_wal/RECOVERYXLOG pg_wal/%s || { echo %s differs; exit 1; }\n", f, f)
			}
		}
		return script.String()
	}

	// Ours: the corpus shipped into a repository first.
	runtimeBin := testenv.BuildRuntime(b)
	d, err := local.New(local.Config{Binary: runtimeBin, Logger: testenv.Logger(b),
		Conn: runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password}})
	must(b, err)
	rt, err := d.Deploy(ctx, guest.Target{Machine: "db1"})
	must(b, err)
	walDir := filepath.Join(testenv.UserDir(b, pg.OSUser), "wal")
	must(b, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: walDir}))
	scan, err := rt.Scan(ctx)
	must(b, err)
	for _, s := range segs {
		copyFile(b, s, filepath.Join(walDir, filepath.Base(s)))
	}
	chownTo(b, pg, walDir)
	repo, err := fs.New(fs.Config{Root: b.TempDir()})
	must(b, err)
	inst := repository.Instance{Job: "bench", Machine: "db1", SystemID: scan.SystemID}
	shipped, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	must(b, err)
	must(b, rt.Close(ctx))
	if shipped.Files != len(segs) {
		b.Fatalf("shipped %d files, want %d", shipped.Files, len(segs))
	}
	ours := func(verify, sample bool) result {
		svc, err := runtime.ServeRestore(runtime.RestoreServiceConfig{
			Dir: filepath.Join(data, "pg_wal"), OSUser: pg.OSUser, Self: []string{runtimeBin}, Logger: testenv.Logger(b),
			Fetch: func(ctx context.Context, name string, w io.Writer) error {
				return walbackup.FetchWAL(ctx, repo, inst, name, nil, w)
			},
		})
		must(b, err)
		defer svc.Close()
		var host *testenv.RSSSampler
		if sample { // the host side, FetchWAL, is this process
			goruntime.GC()
			debug.FreeOSMemory()
			host = testenv.SampleRSS(5*time.Millisecond, []int{os.Getpid()})
		}
		res := runScript(b, pg, data, check(svc.Command(), verify), filepath.Join(data, "pg_wal", ".pglogship-spool-"), sample)
		if host != nil {
			hostKiB := host.Stop()
			b.Logf("peak resident memory: host process %.1f MiB, restore_command processes %.1f MiB",
				float64(hostKiB)/1024, float64(res.peakKiB)/1024)
			res.peakKiB += hostKiB
		}
		res.stored = shipped.StoredBytes
		return res
	}

	// pgBackRest: the corpus pushed into its repository first.
	withPeer := peerRuns(b, pg)
	var pb *testenv.PgBackRest
	var stored int64
	if withPeer {
		pb = asyncPeer(b, pg)
		var push strings.Builder
		for _, s := range segs {
			fmt.Fprintf(&push, "%s || exit 1\n", strings.Join(pb.Args("--pg1-path="+data, "--no-archive-async", "archive-push", "pg_wal/"+filepath.Base(s)), " "))
		}
		runScript(b, pg, data, push.String(), pb.Repo, false)
		stored = duSize(b, filepath.Join(pb.Repo, "archive"))
	}
	peer := func(verify, sample bool) result {
		spool := filepath.Join(testenv.UserDir(b, pg.OSUser), "spool")
		must(b, os.Mkdir(spool, 0o700))
		chownTo(b, pg, filepath.Dir(spool))
		cmd := strings.Join(pb.Args("--pg1-path="+data, "--spool-path="+spool, "archive-get", "%f", "%p"), " ")
		res := runScript(b, pg, data, check(cmd, verify), spool, sample)
		pb.WaitExited(b, spool)
		res.stored = stored
		return res
	}

	names := []string{"pglogship restore service (prefetch 8)", "pgBackRest async archive-get"}
	cs := []contender{
		{names[0], func(int) result { return ours(false, false) }},
		{names[1], func(int) result { return peer(false, false) }},
	}
	if !withPeer {
		names, cs = names[:1], cs[:1]
	}
	b.ResetTimer()
	tallies := race(b, cs)
	b.StopTimer()
	tallies[names[0]].peak = ours(true, true).peakKiB
	var p time.Duration
	if withPeer {
		tallies[names[1]].peak = peer(true, true).peakKiB
		p = tallies[names[1]].mean()
	}

	t := newTable(b, "restore-side fetch: restore_command for 64 segments in order, no replay",
		"contender", "s", "MB/s of WAL", "speed-up over pgBackRest async", "peak memory MiB", "repository MB (ratio)")
	for _, name := range names {
		tl := tallies[name]
		t.row(name, fmt.Sprintf("%.3f", tl.mean().Seconds()), fmt.Sprintf("%.0f", float64(raw)/1e6/tl.mean().Seconds()),
			ratioOr(p, tl.mean()), mib(tl.peak), fmt.Sprintf("%.0f (%.2f)", float64(tl.stored)/1e6, float64(raw)/float64(tl.stored)))
	}
	if withPeer {
		b.ReportMetric(float64(p)/float64(tallies[names[0]].mean()), "speedup")
	}
	t.flush()
}
