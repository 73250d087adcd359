package walbackup_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/repository/s3"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// fleetLine is a line of a fleethost process's stdout (its Line type).
type fleetLine struct {
	PID     int       `json:"pid"`
	Holder  string    `json:"holder"`
	Time    time.Time `json:"time"`
	Source  string    `json:"source"`
	Kind    string    `json:"kind"`
	Job     string    `json:"job"`
	Session string    `json:"session"`
	Files   int       `json:"files"`
	Token   int64     `json:"token"`
	LagMS   int64     `json:"lag_ms"`
	Message string    `json:"message"`
}

// hostProc is one fleethost process.
type hostProc struct {
	holder string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of Wait, once exited is closed
	mu     sync.Mutex
	stderr []string
}

// fleetLog gathers the lines of every process, in arrival order.
type fleetLog struct {
	mu    sync.Mutex
	lines []fleetLine
}

func (l *fleetLog) add(x fleetLine) {
	l.mu.Lock()
	l.lines = append(l.lines, x)
	l.mu.Unlock()
}

// find returns the lines that match.
func (l *fleetLog) find(match func(fleetLine) bool) []fleetLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []fleetLine
	for _, x := range l.lines {
		if match(x) {
			out = append(out, x)
		}
	}
	return out
}

// holders says where each job was last started, from the Runners' events.
func (l *fleetLog) holders() map[string]string {
	where := map[string]string{}
	for _, x := range l.find(func(x fleetLine) bool { return x.Kind == string(walbackup.RunnerJobStarted) }) {
		where[x.Job] = x.Holder
	}
	return where
}

// fleetEnv is what fleethost processes share: their binary, a folder, a
// real PostgreSQL session store (database "config", with a store value of
// the test's own) and a MinIO bucket with the repository on it.
type fleetEnv struct {
	dir, bin string
	storePG  *testenv.Postgres
	records  *postgres.Store
	minio    *testenv.MinIO
	bucket   string
	repo     *s3.Repo
}

func newFleetEnv(tb testing.TB, pg testenv.PostgresConfig) *fleetEnv {
	tb.Helper()
	e := &fleetEnv{dir: tb.TempDir()}
	e.bin = filepath.Join(e.dir, "fleethost")
	if out, err := exec.Command("go", "build", "-o", e.bin, "github.com/pglogship/pglogship/internal/fleethost").CombinedOutput(); err != nil {
		tb.Fatalf("build fleethost: %v\n%s", err, out)
	}
	e.storePG = testenv.StartPostgres(tb, pg)
	e.storePG.CreateDatabase(tb, "config")
	var err error
	e.records, err = postgres.Open(context.Background(), postgres.Config{ConnString: e.storePG.ConnString("config")})
	require.NoError(tb, err)
	tb.Cleanup(e.records.Close)
	e.minio = testenv.StartMinIO(tb)
	e.bucket = e.minio.NewBucket(tb)
	e.repo, err = s3.New(s3.Config{Endpoint: e.minio.Endpoint, Bucket: e.bucket, Prefix: "fleet", Insecure: true,
		AccessKey: e.minio.AccessKey, SecretKey: e.minio.SecretKey, Region: "us-east-1"})
	require.NoError(tb, err)
	return e
}

// config is the fleethost configuration of holder over jobs.
func (e *fleetEnv) config(holder string, ttl, interval time.Duration, jobs any) map[string]any {
	return map[string]any{"holder": holder, "store": e.storePG.ConnString("config"), "lease_ttl": ttl.String(),
		"interval": interval.String(), "jobs": jobs,
		"s3": map[string]string{"endpoint": e.minio.Endpoint, "bucket": e.bucket, "prefix": "fleet", "access_key": e.minio.AccessKey,
			"secret_key": e.minio.SecretKey}}
}

// start starts a fleethost process named holder with the configuration
// cfg, gathering its stdout lines into log and its stderr lines; it is
// killed in cleanup if still running.
func (e *fleetEnv) start(tb testing.TB, log *fleetLog, holder string, cfg map[string]any) *hostProc {
	tb.Helper()
	b, err := json.Marshal(cfg)
	require.NoError(tb, err)
	path := filepath.Join(e.dir, holder+".json")
	require.NoError(tb, os.WriteFile(path, b, 0o600))
	p := &hostProc{holder: holder, cmd: exec.Command(e.bin, path), exited: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	require.NoError(tb, err)
	stderr, err := p.cmd.StderrPipe()
	require.NoError(tb, err)
	require.NoError(tb, p.cmd.Start())
	tb.Logf("process %s started: pid %d", holder, p.cmd.Process.Pid)
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var x fleetLine
			if json.Unmarshal(sc.Bytes(), &x) == nil {
				log.add(x)
			}
		}
	}()
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		pipes.Wait()
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitUntil polls cond until it holds, failing after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Separate host processes (fleethost, each its own OS process) share 60
// jobs on one real PostgreSQL session store and one real MinIO: 57 on
// dir guests (fake guests in folders, shared by the processes as a real
// guest would be) and 3 on real PostgreSQL servers. Then: kill -9 of a
// process mid-ship (its jobs resume elsewhere within the lease's time to
// live, the sessions it left are closed), SIGSTOP of another past the
// time to live and SIGCONT (its writes are refused: the records keep what
// the new holders wrote), the session store restarted under load (every
// job ships again after it), SIGTERM of a third (a clean hand-over). At
// the end, from the session records and the repository: no two child
// sessions of a job ever ran at once, no WAL file was lost, and none was
// stored twice with different content.
func TestSeparateHostProcessesShareJobs(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	const (
		dirJobs  = 57
		realJobs = 3
		ttl      = 5 * time.Second
		interval = time.Minute // the shortest a job takes
		// slack is what a loaded machine adds to a lease's end before a
		// Runner that waits for it has started the job: its wake-up and
		// a few store round trips.
		slack = 3 * time.Second
	)
	env := newFleetEnv(t, testenv.PostgresConfig{})
	tmp, storePG, records, repo := env.dir, env.storePG, env.records, env.repo
	rtBin := testenv.BuildRuntime(t)

	// The guests.
	type dirGuest struct {
		dir   string
		inst  guest.Instance
		next  wal.FileName
		wrote map[string]checksum.Sum
	}
	type realGuest struct {
		pg     *testenv.Postgres
		walDir string
	}
	dirs := map[string]*dirGuest{}
	reals := map[string]*realGuest{}
	var names []string
	type jobConf struct {
		Name     string              `json:"name"`
		DirGuest string              `json:"dir_guest,omitempty"`
		Postgres *runtime.ConnConfig `json:"postgres,omitempty"`
		WALDir   string              `json:"wal_dir,omitempty"`
	}
	var jobs []jobConf
	for i := 0; i < dirJobs+realJobs; i++ {
		name := fmt.Sprintf("fleet-%02d", i)
		names = append(names, name)
		if i < dirJobs {
			g := &dirGuest{dir: filepath.Join(tmp, "guests", name), wrote: map[string]checksum.Sum{},
				inst: guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: uint64(7000 + i), Timeline: 1,
					WALSegmentSize: 16 << 20},
				next: wal.FileName{Kind: wal.Segment, Timeline: 1, Log: 0, Seg: 1}}
			require.NoError(t, guesttest.NewDirGuest(g.dir, g.inst))
			dirs[name] = g
			jobs = append(jobs, jobConf{Name: name, DirGuest: g.dir, WALDir: "/unused"})
			continue
		}
		pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
		pg.Exec(t, "postgres", "CREATE TABLE ticks (at timestamptz)")
		g := &realGuest{pg: pg, walDir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")}
		reals[name] = g
		jobs = append(jobs, jobConf{Name: name, Postgres: &runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User,
			Password: pg.Password}, WALDir: g.walDir})
	}
	for _, name := range names {
		require.NoError(t, records.SetJobEnabled(ctx, name, true))
	}

	// WAL keeps coming: a segment in every dir guest, and a commit and a
	// switch in every real server, every few seconds.
	var genMu sync.Mutex
	addWAL := func() {
		genMu.Lock()
		defer genMu.Unlock()
		for _, g := range dirs {
			payload := []byte(fmt.Sprintf("%d %s", g.inst.SystemID, g.next))
			data := guesttest.Segment(g.next, g.inst.WALSegmentSize, g.inst.SystemID, g.inst.Version, payload)
			require.NoError(t, guesttest.PutDirWAL(g.dir, g.next.String(), data))
			g.wrote[g.next.String()] = checksum.Of(checksum.XXH3, data)
			g.next = g.next.Next(g.inst.WALSegmentSize)
		}
		for _, g := range reals {
			g.pg.Exec(t, "postgres", "INSERT INTO ticks VALUES (now())")
			g.pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
		}
	}
	stopGen := make(chan struct{})
	genDone := make(chan struct{})
	addWAL()
	go func() {
		defer close(genDone)
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopGen:
				return
			case <-tick.C:
				addWAL()
			}
		}
	}()
	stopGenerator := func() {
		select {
		case <-stopGen:
		default:
			close(stopGen)
			<-genDone
		}
	}
	t.Cleanup(stopGenerator)

	// The processes.
	log := &fleetLog{}
	procs := map[string]*hostProc{}
	start := func(holder string) *hostProc {
		cfg := env.config(holder, ttl, interval, jobs)
		cfg["read_delay"], cfg["runtime"] = "150ms", rtBin
		p := env.start(t, log, holder, cfg)
		procs[holder] = p
		return p
	}
	stderrMatching := func(p *hostProc, s string) []string {
		p.mu.Lock()
		defer p.mu.Unlock()
		var out []string
		for _, l := range p.stderr {
			if strings.Contains(l, s) {
				out = append(out, l)
			}
		}
		return out
	}
	jobsOf := func(holder string) []string {
		var out []string
		for job, h := range log.holders() {
			if h == holder {
				out = append(out, job)
			}
		}
		slices.Sort(out)
		return out
	}
	// movedFrom waits until each of jobs started a child session in
	// another process than from after since.
	movedFrom := func(from string, jobs []string, since time.Time, timeout time.Duration) {
		t.Helper()
		waitUntil(t, timeout, fmt.Sprintf("the jobs of %s started elsewhere", from), func() bool {
			moved := map[string]bool{}
			for _, x := range log.find(func(x fleetLine) bool {
				return x.Kind == string(walbackup.EventSessionStarted) && x.Holder != from && !x.Time.Before(since)
			}) {
				moved[x.Job] = true
			}
			for _, j := range jobs {
				if !moved[j] {
					return false
				}
			}
			return true
		})
	}
	// busiest returns the live process of ps that runs the most jobs.
	busiest := func(ps ...*hostProc) *hostProc {
		best := ps[0]
		for _, p := range ps[1:] {
			if len(jobsOf(p.holder)) > len(jobsOf(best.holder)) {
				best = p
			}
		}
		return best
	}

	// balanced waits until the jobs run in even shares over ps, the live
	// processes (the store is a session.Roster): no hand-over is then
	// under way.
	balanced := func(ps ...*hostProc) {
		t.Helper()
		share := len(names) / len(ps)
		waitUntil(t, 4*ttl+30*time.Second, fmt.Sprintf("%d jobs each in %d processes", share, len(ps)), func() bool {
			for _, p := range ps {
				if len(jobsOf(p.holder)) != share {
					return false
				}
			}
			return true
		})
	}

	p1, p2, p3 := start("host-1"), start("host-2"), start("host-3")
	waitUntil(t, time.Minute, "all 60 jobs started", func() bool { return len(log.holders()) == len(names) })
	balanced(p1, p2, p3)
	pids := map[int]string{}
	for _, p := range []*hostProc{p1, p2, p3} {
		require.NotContains(t, pids, p.cmd.Process.Pid)
		pids[p.cmd.Process.Pid] = p.holder
	}
	t.Logf("jobs per process: host-1 %d, host-2 %d, host-3 %d (%d handed over to even the shares)", len(jobsOf("host-1")),
		len(jobsOf("host-2")), len(jobsOf("host-3")), len(log.find(func(x fleetLine) bool { return x.Kind == string(walbackup.RunnerJobHandingOver) })))

	// kill -9 of host-1 mid-ship: when it has shipped its first batch,
	// while its other jobs read their guests (slowly) and upload.
	waitUntil(t, 2*interval, "host-1 ships", func() bool {
		return len(log.find(func(x fleetLine) bool { return x.Holder == "host-1" && x.Kind == string(walbackup.EventBatchShipped) })) > 0
	})
	orphans := jobsOf("host-1")
	require.NoError(t, p1.cmd.Process.Signal(syscall.SIGKILL))
	killedAt := time.Now()
	<-p1.exited
	shipped := map[string]bool{}
	for _, x := range log.find(func(x fleetLine) bool { return x.Holder == "host-1" && x.Kind == string(walbackup.EventBatchShipped) }) {
		shipped[x.Job] = true
	}
	t.Logf("host-1 (pid %d) killed mid-ship: %d of its %d jobs had shipped their batch", p1.cmd.Process.Pid, len(shipped), len(orphans))
	p4 := start("host-4")
	pids[p4.cmd.Process.Pid] = p4.holder
	require.Len(t, pids, 4, "four separate processes")
	movedFrom("host-1", orphans, killedAt, ttl+slack+10*time.Second)
	var slowest time.Duration
	for _, name := range orphans {
		cs := childSessions(t, records, name)
		// The session after host-1's last one: the job may have moved on
		// since, as the shares even out with host-4.
		last := -1
		for i, s := range cs {
			if h, _ := runBy(t, records, s.ID); h == "host-1" {
				last = i
			}
		}
		require.GreaterOrEqual(t, last, 0, name)
		require.Greater(t, len(cs), last+1, name)
		old, cur := cs[last], cs[last+1]
		assert.Equal(t, session.StateFailed, old.State, "%s: the session host-1 left running was closed", name)
		assert.Contains(t, old.Result, "host program stopped", name)
		assert.LessOrEqual(t, cur.Start.Sub(killedAt), ttl+slack, "%s resumed within the lease's time to live of the kill", name)
		slowest = max(slowest, cur.Start.Sub(killedAt))
	}
	t.Logf("host-1's jobs resumed elsewhere at most %v after the kill (lease time to live %v)", slowest.Round(10*time.Millisecond), ttl)

	// SIGSTOP of the busiest process past the time to live; its jobs
	// move; SIGCONT: what it then writes about them is refused.
	balanced(p2, p3, p4)
	pz := busiest(p2, p3, p4)
	paused := jobsOf(pz.holder)
	require.NotEmpty(t, paused)
	require.NoError(t, pz.cmd.Process.Signal(syscall.SIGSTOP))
	stoppedAt := time.Now()
	movedFrom(pz.holder, paused, stoppedAt, ttl+slack+10*time.Second)
	for time.Since(stoppedAt) < ttl+time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	staleOf := map[string]session.Session{}
	for _, name := range paused {
		for _, s := range childSessions(t, records, name) {
			if h, _ := runBy(t, records, s.ID); h == pz.holder {
				staleOf[name] = s // its newest
			}
		}
	}
	require.NoError(t, pz.cmd.Process.Signal(syscall.SIGCONT))
	t.Logf("%s (pid %d) stopped for %v, %d jobs moved", pz.holder, pz.cmd.Process.Pid, time.Since(stoppedAt).Round(time.Second), len(paused))
	waitUntil(t, 30*time.Second, pz.holder+" noticed its jobs were taken", func() bool {
		ended := log.find(func(x fleetLine) bool {
			return x.Holder == pz.holder && x.Kind == string(walbackup.RunnerJobEnded) && x.Time.After(stoppedAt)
		})
		return len(ended) >= len(paused)
	})
	refused := stderrMatching(pz, "fenced off by a newer holder")
	require.NotEmpty(t, refused, "%s's writes after SIGCONT were refused", pz.holder)
	t.Logf("%s's refused writes: %d, e.g. %s", pz.holder, len(refused), refused[0])
	for name, stale := range staleOf {
		cs := childSessions(t, records, name)
		idx := slices.IndexFunc(cs, func(s session.Session) bool { return s.ID == stale.ID })
		require.GreaterOrEqual(t, idx, 0)
		s := cs[idx]
		assert.Equal(t, session.StateFailed, s.State, "%s: %s's session as the new holder closed it", name, pz.holder)
		assert.Contains(t, s.Result, "host program stopped", "%s: %s's own end was refused", name, pz.holder)
		require.Greater(t, len(cs), idx+1, name)
		h, _ := runBy(t, records, cs[idx+1].ID)
		assert.NotEqual(t, pz.holder, h, name)
	}

	// The session store restarted under load.
	restartAt := time.Now()
	out, err := storePG.PgCtl("restart", "-m", "fast", "-w", "-l", storePG.LogFile)
	require.NoError(t, err, "%s", out)
	t.Logf("session store restarted in %v", time.Since(restartAt).Round(100*time.Millisecond))

	// SIGTERM of the busiest other process: its jobs are ended cleanly
	// and handed over.
	var others []*hostProc
	for _, p := range []*hostProc{p2, p3, p4} {
		if p != pz {
			others = append(others, p)
		}
	}
	balanced(p2, p3, p4)
	pt := busiest(others...)
	handed := jobsOf(pt.holder)
	require.NotEmpty(t, handed)
	termAt := time.Now()
	require.NoError(t, pt.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-pt.exited:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGTERM", pt.holder)
	}
	require.NoError(t, pt.err, "%s exits cleanly", pt.holder)
	t.Logf("%s (pid %d) stopped by SIGTERM in %v, %d jobs handed over", pt.holder, pt.cmd.Process.Pid,
		time.Since(termAt).Round(100*time.Millisecond), len(handed))
	movedFrom(pt.holder, handed, termAt, ttl+slack+10*time.Second)
	for _, name := range handed {
		cs := childSessions(t, records, name)
		var last session.Session
		for _, s := range cs {
			if h, _ := runBy(t, records, s.ID); h == pt.holder {
				last = s
			}
		}
		assert.Equal(t, session.StateStopped, last.State, "%s: ended cleanly by %s", name, pt.holder)
		assert.Contains(t, last.Result, "host program ended the job", name)
	}
	var rest []*hostProc
	for _, p := range []*hostProc{p2, p3, p4} {
		if p != pt {
			rest = append(rest, p)
		}
	}

	// Every job ships again after the store's restart, wherever it runs.
	waitUntil(t, 2*interval+ttl+slack, "every job shipped after the store restarted", func() bool {
		shipped := map[string]bool{}
		for _, x := range log.find(func(x fleetLine) bool {
			return x.Kind == string(walbackup.EventBatchShipped) && x.Time.After(restartAt)
		}) {
			shipped[x.Job] = true
		}
		return len(shipped) == len(names)
	})
	for _, p := range rest {
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v", p.holder, p.err)
		default:
		}
	}

	// The end: no more WAL, the last processes stop.
	stopGenerator()
	for _, p := range rest {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	}
	for _, p := range rest {
		<-p.exited
		require.NoError(t, p.err, "%s exits cleanly", p.holder)
	}

	// From the records: one child session of a job at a time, each run by
	// one process, all ended.
	perHolder := map[string]int{}
	for _, name := range names {
		cs := childSessions(t, records, name)
		requireNoOverlap(t, cs, name)
		for _, s := range cs {
			require.True(t, s.State.Final(), "%s: session %s still %s", name, s.ID, s.State)
			h, _ := runBy(t, records, s.ID)
			perHolder[h]++
		}
	}
	t.Logf("child sessions per process: %v", perHolder)

	// From the repository: nothing lost, nothing stored twice with two
	// contents.
	stored := func(inst repository.Instance) map[string]checksum.Sum {
		refs, err := repository.Bundles(ctx, repo, inst, 1)
		require.NoError(t, err)
		got := map[string]checksum.Sum{}
		for _, ref := range refs {
			r, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, nil)
			require.NoError(t, err)
			for _, e := range r.Entries() {
				if prev, ok := got[e.Name]; ok {
					require.Equal(t, prev, e.Sum, "%s stored twice with different content", e.Name)
				}
				got[e.Name] = e.Sum
			}
		}
		return got
	}
	for _, name := range names[:dirJobs] {
		g := dirs[name]
		got := stored(repository.Instance{Job: name, Machine: "vm1", SystemID: g.inst.SystemID})
		waiting, err := guesttest.DirWaiting(g.dir)
		require.NoError(t, err)
		for seg, sum := range g.wrote {
			if s, ok := got[seg]; ok {
				require.Equal(t, sum, s, "%s: %s stored with other content than the guest's", name, seg)
				continue
			}
			require.Contains(t, waiting, seg, "%s: %s neither stored nor in the guest: lost", name, seg)
		}
		require.Greater(t, len(got), len(g.wrote)/2, "%s: most of its WAL shipped", name)
	}
	for _, name := range names[dirJobs:] {
		g := reals[name]
		var sysID uint64
		require.NoError(t, g.pg.Connect(t, "postgres").QueryRow(ctx, "SELECT system_identifier FROM pg_control_system()").Scan(&sysID))
		got := stored(repository.Instance{Job: name, Machine: "vm1", SystemID: sysID})
		all := map[string]bool{}
		for seg := range got {
			if f, err := wal.ParseFileName(seg); err == nil && f.Kind == wal.Segment {
				all[seg] = true
			}
		}
		require.NotEmpty(t, all, name)
		left, err := runtime.Ready(g.walDir)
		require.NoError(t, err)
		for _, f := range left {
			all[f.Name] = true
		}
		segs := make([]string, 0, len(all))
		for s := range all {
			segs = append(segs, s)
		}
		slices.Sort(segs)
		for i := 1; i < len(segs); i++ {
			a, _ := wal.ParseFileName(segs[i-1])
			require.Equal(t, a.Next(16<<20).String(), segs[i], "%s: WAL lost between %s and %s", name, segs[i-1], segs[i])
		}
	}
}
