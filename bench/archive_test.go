package bench_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
)

// memorySegments is how many segments the untimed pass that samples memory
// archives.
const memorySegments = 8

// BenchmarkArchiveCommand: PostgreSQL's archiver runs one archive_command
// per segment through sh, as the server's OS user. Ours (a durable copy
// into the temporary folder: cp and sync to a temporary name, mv -n, sync
// of the folder) against cp plus sync of the file (no atomic name, no
// durable folder entry), and pgBackRest's synchronous archive-push into a
// posix repository (zst, and lz4, its fastest), over the same 64 segments.
func BenchmarkArchiveCommand(b *testing.B) {
	segs := testenv.WALCorpus(b, corpusSegments)
	pg := testenv.StartCorpusPostgres(b, corpusSegments, testenv.PostgresConfig{})
	peer := peerRuns(b, pg)
	var pb *testenv.PgBackRest
	if peer {
		pb = testenv.NewPgBackRest(b, pg, testenv.PgBackRestConfig{})
	}
	data := standIn(b, pg, segs, false)

	var dirs = map[string]string{} // contender and round: its target folder
	target := func(key string) string {
		if d, ok := dirs[key]; ok {
			return d
		}
		d := testenv.UserDir(b, pg.OSUser)
		if strings.HasPrefix(key, "pgBackRest") {
			// A fresh repository: the stanza's, before any WAL.
			repo := filepath.Join(d, "repo")
			if out, err := exec.Command("cp", "-a", pb.Repo, repo).CombinedOutput(); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
			d = repo
		}
		dirs[key] = d
		return d
	}
	ours := func(dir string) string {
		cmd, err := runtime.ArchiveCommand(dir)
		must(b, err)
		return cmd
	}
	contenders := map[string]func(dir string) string{
		"pglogship archive_command": ours,
		"cp + sync":                 func(dir string) string { return "cp %p " + dir + "/%f && sync " + dir + "/%f" },
		"pgBackRest push zst": func(dir string) string {
			return strings.Join(pb.Args("--pg1-path="+data, "--repo1-path="+dir, "--compress-type=zst", "archive-push", "%p"), " ")
		},
		"pgBackRest push lz4": func(dir string) string {
			return strings.Join(pb.Args("--pg1-path="+data, "--repo1-path="+dir, "--compress-type=lz4", "archive-push", "%p"), " ")
		},
	}
	names := []string{"pglogship archive_command", "cp + sync", "pgBackRest push zst", "pgBackRest push lz4"}
	if !peer {
		names = names[:2]
	}
	// archive runs name's command for segs from one script, sampling the
	// memory of its processes: the untimed pass for peak memory.
	archive := func(name, key string, segs []string, sample bool) result {
		dir := target(key)
		cmd := contenders[name](dir)
		var script strings.Builder
		for _, s := range segs {
			f := filepath.Base(s)
			c := strings.NewReplacer("%p", "pg_wal/"+f, "%f", f).Replace(cmd)
			fmt.Fprintf(&script, "/bin/sh -c %s || exit 1\n", testenv.ShellQuote(c))
		}
		return runScript(b, pg, data, script.String(), dir, sample)
	}
	// The disk's speed here changes by a factor of three from one second
	// to the next, so the contenders take turns segment by segment (the
	// order turning too) rather than run by run, and each call is timed.
	tallies := map[string]*tally{}
	for _, name := range names {
		tallies[name] = &tally{}
	}
	b.ResetTimer()
	for r := 0; r < rounds(b); r++ {
		cmds := map[string]string{}
		for _, name := range names {
			cmds[name] = contenders[name](target(fmt.Sprintf("%s/%d", name, r)))
		}
		took := map[string]time.Duration{}
		for i, s := range segs {
			f := filepath.Base(s)
			for k := range names {
				name := names[(r+i+k)%len(names)]
				sh := pg.Shell(data, strings.NewReplacer("%p", "pg_wal/"+f, "%f", f).Replace(cmds[name]))
				start := time.Now()
				out, err := sh.CombinedOutput()
				took[name] += time.Since(start)
				if err != nil {
					b.Fatalf("%s: %v\n%s", name, err, out)
				}
			}
		}
		for _, name := range names {
			tallies[name].times = append(tallies[name].times, took[name])
			b.Logf("round %d: %-28s %8.3f s", r+1, name, took[name].Seconds())
		}
		for _, name := range names {
			dir := target(fmt.Sprintf("%s/%d", name, r))
			if strings.HasPrefix(name, "pgBackRest") {
				dir = filepath.Join(dir, "archive")
			}
			tallies[name].stored = duSize(b, dir)
		}
	}
	b.StopTimer()
	for _, name := range names {
		res := archive(name, name+"/memory", segs[:memorySegments], true)
		tallies[name].peak = res.peakKiB
	}

	raw := int64(len(segs)) * testenv.CorpusSegmentSize
	perSeg := func(name string) float64 {
		return tallies[name].mean().Seconds() * 1000 / float64(len(segs))
	}
	t := newTable(b, "archive_command: cost per 16 MiB segment (64 segments, one sh per segment, as the server's OS user)",
		"contender", "ms / segment", "MB/s", "pglogship / this", "peak memory MiB", "stored MB (ratio)")
	ourMean := tallies[names[0]].mean()
	for _, name := range names {
		tl := tallies[name]
		t.row(name, fmt.Sprintf("%.1f", perSeg(name)), fmt.Sprintf("%.0f", float64(raw)/1e6/tl.mean().Seconds()),
			ratio(ourMean, tl.mean()), mib(tl.peak), fmt.Sprintf("%.0f (%.2f)", float64(tl.stored)/1e6, float64(raw)/float64(tl.stored)))
		b.ReportMetric(perSeg(name), "ms/seg-"+strings.ReplaceAll(strings.ReplaceAll(name, " ", "-"), "+", "plus"))
	}
	b.ReportMetric(float64(ourMean)/float64(tallies["cp + sync"].mean()), "ratio-cp+sync")
	t.flush()
}
