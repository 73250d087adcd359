package bench_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/repository/s3"
	"github.com/pglogship/pglogship/repository/sftp"
	"github.com/pglogship/pglogship/walbackup"
)

// BenchmarkShip drains a backlog of 64 segments waiting in the guest:
// ours, the runtime deployed over SSH (OpenSSH on loopback) compressing in
// the guest and ShipOnce writing one bundle, read back and verified before
// the guest deletes the files, into a file-system repository and into an
// SFTP repository (on an sshd of its own, the store), and directly from the
// guest into MinIO and into that SFTP store (over an account of the guest's
// own); against pgBackRest's asynchronous archive-push (process-max=2, zst)
// into a posix repository, the archiver's calls made one after another for
// every .ready segment.
func BenchmarkShip(b *testing.B) {
	ctx := context.Background()
	segs := testenv.WALCorpus(b, corpusSegments)
	raw := int64(len(segs)) * testenv.CorpusSegmentSize
	pg := testenv.StartCorpusPostgres(b, corpusSegments, testenv.PostgresConfig{})

	// Ours.
	sshd := testenv.StartSSHD(b, testenv.SSHDConfig{User: pg.OSUser})
	cc := sshd.ClientConfig(b)
	walDir := filepath.Join(testenv.UserDir(b, pg.OSUser), "wal")
	// A runtime per codec (the codec is the session's), each in a folder
	// of its own so its CPU and memory are told apart.
	type side struct {
		rt      guest.Runtime
		baseDir string
	}
	deploy := func(codec guest.Codec) side {
		baseDir := filepath.Join(testenv.UserDir(b, sshd.User), "runtimes-"+string(codec))
		deployer, err := gssh.New(gssh.Config{
			User: sshd.User, Auth: cc.Auth, HostKeyCallback: cc.HostKeyCallback,
			Binaries: map[string]string{goruntime.GOARCH: testenv.BuildRuntime(b)}, BaseDir: baseDir,
			Conn:   runtime.ConnConfig{Host: pg.SocketDir, Port: pg.Port, User: pg.User},
			Logger: testenv.Logger(b),
		})
		must(b, err)
		rt, err := deployer.Deploy(ctx, guest.Target{Machine: "db1", Address: sshd.Addr})
		must(b, err)
		b.Cleanup(func() { rt.Close(ctx) })
		must(b, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: walDir, Codec: codec}))
		return side{rt, baseDir}
	}
	zs, s2s := deploy(guest.CodecZstd), deploy(guest.CodecS2)
	scan, err := zs.rt.Scan(ctx)
	must(b, err)
	fsRepo, err := fs.New(fs.Config{Root: b.TempDir()})
	must(b, err)
	// The SFTP store and pgBackRest's repository host are behind an sshd
	// of their own, so that their CPU is told apart from the guest's.
	storeSSHD := testenv.StartSSHD(b, testenv.SSHDConfig{User: pg.OSUser})
	storeCC := storeSSHD.ClientConfig(b)
	sftpRoot := filepath.Join(testenv.UserDir(b, storeSSHD.User), "repo")
	sftpRepo, err := sftp.New(ctx, sftp.Config{Addr: storeSSHD.Addr, User: storeSSHD.User, Auth: storeCC.Auth,
		HostKeyCallback: storeCC.HostKeyCallback, Root: sftpRoot})
	must(b, err)
	defer sftpRepo.Close()
	// MinIO over TLS (pgBackRest speaks S3 over TLS only): ours ships
	// into it directly from the guest, pgBackRest asynchronously.
	m := testenv.StartMinIOTLS(b)
	bucket := m.NewBucket(b)
	s3Repo, err := s3.New(s3.Config{Endpoint: m.Endpoint, Bucket: bucket, Prefix: "pglogship", AccessKey: m.AccessKey,
		SecretKey: m.SecretKey, Region: "us-east-1", Transport: m.Transport(b), GuestCAPEM: m.CAPEM})
	must(b, err)
	directOf := func(sd side) *walbackup.Direct {
		return &walbackup.Direct{Guest: sd.rt.(guest.DirectShipper), Uploads: s3Repo, TTL: walbackup.DefaultAuthorizationTTL,
			MaxBytes: walbackup.DefaultDirectBundleBytes, Clock: clock.New()}
	}
	// Direct into SFTP: the guest writes over an account of its own on
	// the store (a key of its own, the store's host key pinned); this
	// host only reads back, through sftpRepo.
	guestKey := filepath.Join(testenv.UserDir(b, pg.OSUser), "guest_sftp_key")
	storeSSHD.AddClientKey(b, guestKey)
	chownTo(b, pg, guestKey)
	sftpOf := func(sd side) *walbackup.Direct {
		return &walbackup.Direct{Guest: sd.rt.(guest.DirectShipper), SFTP: &guest.SFTPAccess{Addr: storeSSHD.Addr, User: storeSSHD.User,
			KeyFile: guestKey, KnownHosts: storeSSHD.KnownHostsLine, Root: sftpRoot},
			MaxBytes: walbackup.DefaultDirectBundleBytes, Clock: clock.New()}
	}
	// CPU of the guest side: everything the machine ran but the host
	// process and the stores (MinIO; the SFTP server's sshd). Through
	// pgBackRest's repository host, that sshd runs the host's side.
	type cpuMark struct{ machine, host, store, sshStore time.Duration }
	markCPU := func() cpuMark {
		return cpuMark{machineCPU(), testenv.CPUTime([]int{os.Getpid()}, ""), testenv.CPUTime([]int{m.PID}, ""),
			testenv.TreeCPUTime(storeSSHD.PID)}
	}
	since := func(res *result, c cpuMark, sshIsHost bool) {
		now := markCPU()
		res.hostCPU = now.host - c.host
		behindSSH := now.sshStore - c.sshStore
		res.guestCPU = (now.machine - c.machine) - res.hostCPU - (now.store - c.store) - behindSSH
		if sshIsHost {
			res.hostCPU += behindSSH
		}
	}

	runs := 0
	ship := func(sd side, repo repository.Repository, d *walbackup.Direct, sample bool) result {
		rt, baseDir := sd.rt, sd.baseDir
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
		cpu := markCPU()
		stopPerf := perfRecord(b, runs)
		start := time.Now()
		got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{Time: start, Direct: d})
		res := result{elapsed: time.Since(start), stored: got.StoredBytes}
		stopPerf()
		since(&res, cpu, false)
		b.Logf("CPU: host process %v, runtime %v, guest side %v", testenv.CPUTime([]int{os.Getpid()}, "")-hostCPU,
			testenv.CPUTime(nil, baseDir)-rtCPU, res.guestCPU)
		if sample {
			hostKiB, rtKiB := host.Stop(), rtm.Stop()
			res.peakKiB, res.hostKiB, res.guestKiB = hostKiB+rtKiB, hostKiB, rtKiB
			b.Logf("peak resident memory shipping into %T: host process %.1f MiB, runtime %.1f MiB", repo,
				float64(hostKiB)/1024, float64(rtKiB)/1024)
		}
		must(b, err)
		if got.Direct != (d != nil) {
			b.Fatalf("shipped directly: %t, want %t", got.Direct, d != nil)
		}
		if got.Files != len(segs) || got.RawBytes != raw {
			b.Fatalf("shipped %d files, %d bytes; want %d, %d", got.Files, got.RawBytes, len(segs), raw)
		}
		left, err := runtime.Ready(walDir)
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
		cpu := markCPU()
		res := runScript(b, pg, data, script.String(), repo, sample)
		pb.WaitExited(b, repo)
		since(&res, cpu, false)
		res.stored = duSize(b, filepath.Join(repo, "archive"))
		return res
	}

	// pgBackRest through a repository host over SSH: the archived WAL is
	// removed after each run (the stanza stays), so each run pushes it all.
	var pbHost *testenv.PgBackRest
	var hostRepo string
	if withPeer {
		pbHost, hostRepo = repoHostPeer(b, pg, storeSSHD)
	}
	pushHost := func(sample bool) result {
		markReady(b, pg, data, segs)
		script, spool := pushScript(b, pg, pbHost, data, segs)
		cpu := markCPU()
		res := runScript(b, pg, data, script, spool, sample)
		pbHost.WaitExited(b, spool)
		pbHost.WaitExited(b, hostRepo)
		since(&res, cpu, true)
		archive := filepath.Join(hostRepo, "archive", "repohost")
		res.stored = duSize(b, archive)
		wals, err := filepath.Glob(filepath.Join(archive, "*", "0000*"))
		must(b, err)
		for _, w := range wals {
			must(b, os.RemoveAll(w))
		}
		return res
	}

	// pgBackRest into MinIO: a stanza of its own in the bucket, a new
	// repository path each run (created before the clock starts).
	var pbS3 *testenv.PgBackRest
	if withPeer {
		_, port, err := net.SplitHostPort(m.Endpoint)
		must(b, err)
		pbS3 = testenv.NewPgBackRest(b, pg, testenv.PgBackRestConfig{Stanza: "s3", Settings: map[string]string{
			"archive-async": "y", "process-max": "2", "compress-type": "zst",
			"repo1-type": "s3", "repo1-path": "/pgbackrest/setup", "repo1-s3-bucket": bucket, "repo1-s3-endpoint": "127.0.0.1",
			"repo1-s3-port": port, "repo1-s3-region": "us-east-1", "repo1-s3-key": m.AccessKey, "repo1-s3-key-secret": m.SecretKey,
			"repo1-s3-uri-style": "path", "repo1-storage-verify-tls": "n",
		}})
	}
	pushes := 0
	pushS3 := func(sample bool) result {
		markReady(b, pg, data, segs)
		pushes++
		path := fmt.Sprintf("/pgbackrest/run-%d", pushes)
		pbS3.Run(b, "--repo1-path="+path, "stanza-create")
		script, spool := pushScript(b, pg, pbS3, data, segs, "--repo1-path="+path)
		cpu := markCPU()
		res := runScript(b, pg, data, script, spool, sample)
		pbS3.WaitExited(b, spool)
		since(&res, cpu, false)
		for o := range m.Client(b).ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: strings.TrimPrefix(path, "/") + "/archive/", Recursive: true}) {
			must(b, o.Err)
			res.stored += o.Size
		}
		return res
	}

	// Ours with each codec, zstd (the default) and S2, into each
	// destination, against the peers doing the same: through a host into a
	// repository (pgBackRest's posix repository and its repository host
	// over SSH), or straight into the store (MinIO; pgBackRest 2.45 has no
	// SFTP repositories, so direct into SFTP faces the first two).
	peers := []string{"pgBackRest async push -> posix", "pgBackRest async via repo host (SSH)", "pgBackRest async push -> MinIO (TLS)"}
	throughHost, intoMinIO := peers[:2], peers[2:]
	dests := []struct {
		name   string
		repo   repository.Repository
		direct func(side) *walbackup.Direct // nil: through the host
		peers  []string
	}{
		{"over SSH -> fs", fsRepo, nil, throughHost},
		{"over SSH -> SFTP", sftpRepo, nil, throughHost},
		{"direct -> MinIO (TLS)", s3Repo, directOf, intoMinIO},
		{"direct -> SFTP", sftpRepo, sftpOf, throughHost},
	}
	var names []string
	var ours []func(sample bool) result
	peersOf := map[string][]string{}
	for _, c := range []struct {
		prefix string
		sd     side
	}{{"pglogship ", zs}, {"pglogship S2 ", s2s}} {
		for _, d := range dests {
			var direct *walbackup.Direct
			if d.direct != nil {
				direct = d.direct(c.sd)
			}
			names = append(names, c.prefix+d.name)
			peersOf[c.prefix+d.name] = d.peers
			ours = append(ours, func(sample bool) result { return ship(c.sd, d.repo, direct, sample) })
		}
	}
	names = append(names, peers...)
	var cs []contender
	for i, f := range ours {
		cs = append(cs, contender{names[i], func(int) result { return f(false) }})
	}
	cs = append(cs, contender{peers[0], func(int) result { return push(false) }},
		contender{peers[1], func(int) result { return pushHost(false) }},
		contender{peers[2], func(int) result { return pushS3(false) }})
	if !withPeer {
		names, cs = names[:len(ours)], cs[:len(ours)]
	}
	if only := os.Getenv("PGLOGSHIP_BENCH_ONLY"); only != "" {
		// Profiling: the contenders named, timed, nothing else.
		var sel []contender
		for _, c := range cs {
			for _, o := range strings.Split(only, "|") {
				if strings.Contains(c.name, o) {
					sel = append(sel, c)
					break
				}
			}
		}
		race(b, sel)
		return
	}
	b.ResetTimer()
	tallies := race(b, cs)
	b.StopTimer()
	for i, f := range ours {
		tallies[names[i]].peak = f(true).peakKiB
	}
	// Memory must not grow with the volume: ten backlogs of 1 GiB one
	// after another through the same runtime and host process, each side's
	// peak over all ten against its peak over the first.
	for i, f := range ours {
		ours := func() result { return f(true) }
		var first, all result
		for n := 0; n < volumeRounds; n++ {
			r := ours()
			if n == 0 {
				first = r
			}
			all.hostKiB, all.guestKiB = max(all.hostKiB, r.hostKiB), max(all.guestKiB, r.guestKiB)
		}
		b.Logf("peak resident memory, %s: host process %s MiB over the first GiB, %s MiB over %d GiB; runtime %s MiB, %s MiB",
			names[i], mib(first.hostKiB), mib(all.hostKiB), volumeRounds, mib(first.guestKiB), mib(all.guestKiB))
	}
	if withPeer {
		tallies[peers[0]].peak = push(true).peakKiB
		tallies[peers[1]].peak = pushHost(true).peakKiB
		tallies[peers[2]].peak = pushS3(true).peakKiB
	}

	gib := float64(raw) / (1 << 30)
	perGiB := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", cpuMean(ds).Seconds()/gib)
	}
	t := newTable(b, "shipping: a backlog of 64 segments (1 GiB) from the guest into the repository",
		"contender", "s", "MB/s of WAL", "speed-up over its pgBackRest peers", "guest CPU s/GiB (x peer)", "host CPU s/GiB",
		"peak memory MiB", "stored MB (ratio)")
	for _, name := range names {
		tl := tallies[name]
		var speeds, cpus []string
		for _, peer := range peersOf[name] {
			p, ok := tallies[peer]
			if !ok {
				continue
			}
			speeds = append(speeds, ratio(p.mean(), tl.mean())+" ("+strings.TrimPrefix(peer, "pgBackRest async ")+")")
			if pc := cpuMean(p.guestCPU); pc > 0 {
				cpus = append(cpus, fmt.Sprintf("%.2f", float64(cpuMean(tl.guestCPU))/float64(pc)))
			}
			b.ReportMetric(float64(p.mean())/float64(tl.mean()), "speedup-"+metricName(name)+"-vs-"+metricName(peer))
		}
		speed, cpu := "-", perGiB(tl.guestCPU)
		if len(speeds) > 0 {
			speed = strings.Join(speeds, ", ")
		}
		if len(cpus) > 0 {
			cpu += " (" + strings.Join(cpus, ", ") + ")"
		}
		t.row(name, fmt.Sprintf("%.3f", tl.mean().Seconds()), fmt.Sprintf("%.0f", float64(raw)/1e6/tl.mean().Seconds()),
			speed, cpu, perGiB(tl.hostCPU), mib(tl.peak),
			fmt.Sprintf("%.0f (%.2f)", float64(tl.stored)/1e6, float64(raw)/float64(tl.stored)))
	}
	t.flush()
}

// perfRecord profiles one of ours shipping when PGLOGSHIP_BENCH_PERF names
// a folder: every process's stacks with perf (run-N.data; the runtime,
// sshd, the store) and the host process with pprof (host-N.pprof), N
// counting the ships. It returns what stops both.
func perfRecord(b *testing.B, run int) func() {
	dir := os.Getenv("PGLOGSHIP_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "999", "-o", filepath.Join(dir, fmt.Sprintf("run-%d.data", run)))
	cmd.Stderr = os.Stderr
	must(b, cmd.Start())
	time.Sleep(300 * time.Millisecond) // perf's set-up
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("host-%d.pprof", run)))
	must(b, err)
	must(b, pprof.StartCPUProfile(f))
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		must(b, cmd.Process.Signal(os.Interrupt))
		cmd.Wait()
	}
}

// volumeRounds is how many 1 GiB backlogs the memory check ships in a row.
const volumeRounds = 10

// pushScript is the archiver's calls of pgBackRest's archive-push for every
// segment, one after another, with a fresh spool folder (returned), the
// stand-in data directory and the options given.
func pushScript(b *testing.B, pg *testenv.Postgres, pb *testenv.PgBackRest, data string, segs []string, options ...string) (string, string) {
	b.Helper()
	spool := filepath.Join(testenv.UserDir(b, pg.OSUser), "spool")
	must(b, os.Mkdir(spool, 0o700))
	chownTo(b, pg, filepath.Dir(spool))
	syncAll()
	var script strings.Builder
	for _, s := range segs {
		args := append(append([]string{"--pg1-path=" + data}, options...), "--spool-path="+spool, "archive-push", "pg_wal/"+filepath.Base(s))
		fmt.Fprintf(&script, "%s || exit 1\n", strings.Join(pb.Args(args...), " "))
	}
	return script.String(), spool
}

// metricName is a contender's name as a benchmark metric: its last word
// (fs, SFTP, posix, (TLS)...) without punctuation, lower case.
func metricName(name string) string {
	f := strings.Fields(strings.NewReplacer("(", "", ")", "", ">", "").Replace(name))
	m := strings.ToLower(strings.Join(f[len(f)-2:], "-"))
	if strings.Contains(name, " S2 ") {
		return "s2" + m
	}
	return m
}

// syncAll flushes dirty pages left by the set-up, so a timed run does not
// pay for the one before it.
func syncAll() { exec.Command("sync").Run() }
