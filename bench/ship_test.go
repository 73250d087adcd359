package bench_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/repository/sftp"
	"github.com/pglogship/pglogship/walbackup"
)

// BenchmarkShip drains a backlog of 64 segments waiting in the guest:
// ours, the runtime deployed over SSH (OpenSSH on loopback) compressing in
// the guest and ShipOnce writing one bundle, read back and verified before
// the guest deletes the files, into a file-system repository and into an
// SFTP repository (the same sshd); against pgBackRest's asynchronous
// archive-push (process-max=2, zst) into a posix repository, the archiver's
// calls made one after another for every .ready segment.
func BenchmarkShip(b *testing.B) {
	ctx := context.Background()
	segs := testenv.WALCorpus(b, corpusSegments)
	raw := int64(len(segs)) * testenv.CorpusSegmentSize
	pg := testenv.StartCorpusPostgres(b, corpusSegments, testenv.PostgresConfig{})

	// Ours.
	sshd := testenv.StartSSHD(b, testenv.SSHDConfig{User: pg.OSUser})
	cc := sshd.ClientConfig(b)
	baseDir := filepath.Join(testenv.UserDir(b, sshd.User), "runtimes")
	deployer, err := gssh.New(gssh.Config{
		User: sshd.User, Auth: cc.Auth, HostKeyCallback: cc.HostKeyCallback,
		Binaries: map[string]string{goruntime.GOARCH: testenv.BuildRuntime(b)}, BaseDir: baseDir,
		Conn:   runtime.ConnConfig{Host: pg.SocketDir, Port: pg.Port, User: pg.User},
		Logger: testenv.Logger(b),
	})
	must(b, err)
	rt, err := deployer.Deploy(ctx, guest.Target{Machine: "db1", Address: sshd.Addr})
	must(b, err)
	defer rt.Close(ctx)
	walDir := filepath.Join(testenv.UserDir(b, pg.OSUser), "wal")
	must(b, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: walDir}))
	scan, err := rt.Scan(ctx)
	must(b, err)
	fsRepo, err := fs.New(fs.Config{Root: b.TempDir()})
	must(b, err)
	sftpRepo, err := sftp.New(ctx, sftp.Config{Addr: sshd.Addr, User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sshd.ClientSigner)},
		HostKeyCallback: cc.HostKeyCallback, Root: filepath.Join(testenv.UserDir(b, sshd.User), "repo")})
	must(b, err)
	defer sftpRepo.Close()
	runs := 0
	ship := func(repo repository.Repository, sample bool) result {
		for _, s := range segs {
			copyFile(b, s, filepath.Join(walDir, filepath.Base(s)))
		}
		chownTo(b, pg, walDir)
		syncAll()
		runs++ // a new instance each run, so nothing is there yet
		inst := repository.Instance{Job: fmt.Sprintf("bench %d", runs), Machine: "db1", SystemID: scan.SystemID}
		var host, rtm *testenv.RSSSampler
		if sample {
			goruntime.GC()
			debug.FreeOSMemory()
			host = testenv.SampleRSS(5*time.Millisecond, []int{os.Getpid()})
			rtm = testenv.SampleRSS(5*time.Millisecond, nil, baseDir)
		}
		hostCPU, rtCPU := testenv.CPUTime([]int{os.Getpid()}, ""), testenv.CPUTime(nil, baseDir)
		start := time.Now()
		got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{Time: start})
		res := result{elapsed: time.Since(start), stored: got.StoredBytes}
		b.Logf("CPU: host process %v, runtime %v", testenv.CPUTime([]int{os.Getpid()}, "")-hostCPU, testenv.CPUTime(nil, baseDir)-rtCPU)
		if sample {
			hostKiB, rtKiB := host.Stop(), rtm.Stop()
			res.peakKiB = hostKiB + rtKiB
			b.Logf("peak resident memory shipping into %T: host process %.1f MiB, runtime %.1f MiB", repo,
				float64(hostKiB)/1024, float64(rtKiB)/1024)
		}
		must(b, err)
		if got.Files != len(segs) || got.RawBytes != raw {
			b.Fatalf("shipped %d files, %d bytes; want %d, %d", got.Files, got.RawBytes, len(segs), raw)
		}
		left, err := os.ReadDir(walDir)
		must(b, err)
		if len(left) != 0 {
			b.Fatalf("%d files left in the guest", len(left))
		}
		return res
	}

	// pgBackRest.
	withPeer := peerRuns(b, pg)
	var pb *testenv.PgBackRest
	var data string
	if withPeer {
		pb = asyncPeer(b, pg)
		data = standIn(b, pg, segs, true)
	}
	push := func(sample bool) result {
		markReady(b, pg, data, segs)
		d := testenv.UserDir(b, pg.OSUser)
		repo, spool := filepath.Join(d, "repo"), filepath.Join(d, "spool")
		if out, err := exec.Command("cp", "-a", pb.Repo, repo).CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		must(b, os.Mkdir(spool, 0o700))
		chownTo(b, pg, d)
		syncAll()
		var script strings.Builder
		for _, s := range segs {
			argv := pb.Args("--pg1-path="+data, "--repo1-path="+repo, "--spool-path="+spool, "archive-push", "pg_wal/"+filepath.Base(s))
			fmt.Fprintf(&script, "%s || exit 1\n", strings.Join(argv, " "))
		}
		res := runScript(b, pg, data, script.String(), repo, sample)
		pb.WaitExited(b, repo)
		res.stored = duSize(b, filepath.Join(repo, "archive"))
		return res
	}

	names := []string{"pglogship over SSH -> fs", "pglogship over SSH -> SFTP", "pgBackRest async push -> posix"}
	cs := []contender{
		{names[0], func(int) result { return ship(fsRepo, false) }},
		{names[1], func(int) result { return ship(sftpRepo, false) }},
		{names[2], func(int) result { return push(false) }},
	}
	if !withPeer {
		names, cs = names[:2], cs[:2]
	}
	b.ResetTimer()
	tallies := race(b, cs)
	b.StopTimer()
	tallies[names[0]].peak = ship(fsRepo, true).peakKiB
	tallies[names[1]].peak = ship(sftpRepo, true).peakKiB
	var peer time.Duration
	if withPeer {
		tallies[names[2]].peak = push(true).peakKiB
		peer = tallies[names[2]].mean()
	}

	t := newTable(b, "shipping: a backlog of 64 segments (1 GiB) from the guest into the repository",
		"contender", "s", "MB/s of WAL", "speed-up over pgBackRest async", "peak memory MiB", "stored MB (ratio)")
	for _, name := range names {
		tl := tallies[name]
		t.row(name, fmt.Sprintf("%.3f", tl.mean().Seconds()), fmt.Sprintf("%.0f", float64(raw)/1e6/tl.mean().Seconds()),
			ratioOr(peer, tl.mean()), mib(tl.peak), fmt.Sprintf("%.0f (%.2f)", float64(tl.stored)/1e6, float64(raw)/float64(tl.stored)))
	}
	if withPeer {
		b.ReportMetric(float64(peer)/float64(tallies[names[0]].mean()), "speedup-fs")
		b.ReportMetric(float64(peer)/float64(tallies[names[1]].mean()), "speedup-sftp")
	}
	t.flush()
}

// syncAll flushes dirty pages left by the set-up, so a timed run does not
// pay for the one before it.
func syncAll() { exec.Command("sync").Run() }
