package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/wal"
)

// RecoveryLog is the server log of a recovery, relative to the data
// directory. Recover starts PostgreSQL with its output appended there (and
// logging_collector off), so it can tell why a server stopped.
const RecoveryLog = "log/pglogship-recovery.log"

// Limits of Recover.
const (
	// maxSocketPath keeps a unix socket path within sun_path; a spool
	// deeper than that gets its socket in a private temporary folder.
	maxSocketPath = 100
	// logTailBytes and logTailLines bound RecoveryResult.Log.
	logTailBytes = 16 << 10
	logTailLines = 40
)

// Messages of PostgreSQL's log that Recover reads (lc_messages is C for
// the recovery run).
const (
	msgTargetNotReached = "recovery ended before configured recovery target was reached"
	msgShutdownAtTarget = "shutdown at recovery target"
	msgShutDown         = "database system is shut down"
	msgReadOnly         = "database system is ready to accept read-only connections"
	msgTurnedAway       = "the database system is" // starting up, not (yet) accepting connections, shutting down
)

// osUser is the OS user PostgreSQL runs as when the runtime is root.
type osUser struct {
	name     string
	uid, gid int
	groups   []uint32
	home     string
}

// recovery is one Recover call.
type recovery struct {
	rt       *Runtime
	cfg      guest.RecoveryConfig
	root     *os.Root          // the data directory, opened once
	links    map[uint32]string // pg_tblspc's links, checked against cfg.Tablespaces
	owner    *osUser           // nil: the server runs as the runtime's own user
	pgCtl    string
	major    int // PostgreSQL's major version, from PG_VERSION
	prefetch int
	logPath  string
	logStart int64
}

// endState is how recovery ended.
type endState int

const (
	endPromoted endState = iota + 1
	endPaused
	endShutdown
)

// Recover implements guest.Recoverer in the guest: see there. fetch asks
// the host for WAL files (Serve passes one that makes calls over the
// protocol); it is called from several goroutines at once.
func (r *Runtime) Recover(ctx context.Context, cfg guest.RecoveryConfig, fetch guest.FetchFunc) (guest.RecoveryResult, error) {
	rec, err := r.planRecovery(ctx, cfg)
	if err != nil {
		return guest.RecoveryResult{}, fmt.Errorf("recover %s: %w", cfg.DataDir, err)
	}
	defer rec.root.Close()
	res, err := rec.run(ctx, fetch)
	if err != nil {
		return res, fmt.Errorf("recover %s: %w", cfg.DataDir, err)
	}
	return res, nil
}

// planRecovery checks everything it can before anything is changed, and
// opens the data directory (the recovery's root, closed by the caller).
func (r *Runtime) planRecovery(ctx context.Context, cfg guest.RecoveryConfig) (_ *recovery, err error) {
	if err := checkGuestPath("data directory", cfg.DataDir); err != nil {
		return nil, err
	}
	root, err := openDir("data directory", cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			root.Close()
		}
	}()
	if cfg.ConfigFile != "" {
		if err := checkGuestPath("configuration file", cfg.ConfigFile); err != nil || strings.ContainsAny(cfg.ConfigFile, " \t'") {
			return nil, fmt.Errorf("configuration file %q: an absolute path without spaces or quotes (%v)", cfg.ConfigFile, err)
		}
		if st, err := os.Stat(cfg.ConfigFile); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("configuration file %s: not a file (%v)", cfg.ConfigFile, err)
		}
		if strings.ContainsAny(cfg.DataDir, " \t'") {
			return nil, fmt.Errorf("data directory %q: with a configuration file outside it, a path without spaces or quotes", cfg.DataDir)
		}
	}
	version, err := root.ReadFile("PG_VERSION")
	major := strings.TrimSpace(string(version))
	majorNum, aerr := strconv.Atoi(major)
	if err != nil || aerr != nil {
		return nil, fmt.Errorf("%s holds no PostgreSQL cluster: PG_VERSION: %q (%v)", cfg.DataDir, major, err)
	}
	for k, v := range cfg.Settings {
		if err := checkSetting(k, v); err != nil {
			return nil, err
		}
		if k == "restore_command" {
			return nil, errors.New("restore_command is the runtime's own and cannot be set")
		}
	}
	if strings.ContainsRune(cfg.BackupLabel+cfg.TablespaceMap, 0) {
		return nil, errors.New("backup_label or tablespace_map contains NUL")
	}
	if err := checkNotRunning(cfg.DataDir); err != nil {
		return nil, err
	}
	links, err := checkTablespaceLinks(root, cfg.Tablespaces)
	if err != nil {
		return nil, err
	}
	owner, err := serverUser(cfg.OSUser, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	pgCtl, err := findPgCtl(cfg.BinDir, major)
	if err != nil {
		return nil, err
	}
	if err := checkRelease(ctx, pgCtl, majorNum); err != nil {
		return nil, err
	}
	return &recovery{rt: r, cfg: cfg, root: root, links: links, owner: owner, pgCtl: pgCtl, major: majorNum,
		prefetch: prefetchOf(cfg.Prefetch), logPath: filepath.Join(cfg.DataDir, RecoveryLog)}, nil
}

// checkGuestPath checks a path Recover uses: absolute, clean, and free of
// what pg_ctl's double-quoted shell command or a configuration line could
// not hold (control characters, " $ ` \).
func checkGuestPath(what, p string) error {
	switch {
	case !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/":
		return fmt.Errorf("%s %q: must be a clean absolute path below /", what, p)
	case strings.ContainsAny(p, "\"$`\\\x7f"):
		return fmt.Errorf("%s %q: the characters \" $ ` \\ are not allowed", what, p)
	}
	for _, c := range p {
		if c < 0x20 {
			return fmt.Errorf("%s %q: control characters are not allowed", what, p)
		}
	}
	return nil
}

// checkNotRunning refuses a data directory whose postmaster.pid names a
// live postmaster of it. A pid file restored with an image names a process
// of the machine it was taken on, whose number may be anything's here: a
// live process that does not work in the data directory (a postmaster
// chdirs into it) does not count.
func checkNotRunning(dataDir string) error {
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	pf, err := readPidFile(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", pidFile, err)
	case pf.pid > 0 && alive(pf.pid) && isPostmaster("/proc", pf, dataDir):
		return fmt.Errorf("%w: %s names process %d, which is alive and works in it", guest.ErrServerRunning, pidFile, pf.pid)
	}
	return nil
}

// alive tells whether process pid exists (EPERM: it does, as another user).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// isPostmaster tells whether the live process pf.pid is the postmaster that
// wrote pf. A postmaster chdirs into its data directory; when another
// user's working directory cannot be read, the process must have started
// when the pid file says (a number reused after a reboot started later).
// With neither readable it assumes so: refusing is the safe side.
func isPostmaster(proc string, pf pidFile, dir string) bool {
	if cwd, err := os.Readlink(filepath.Join(proc, strconv.Itoa(pf.pid), "cwd")); err == nil {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			dir = real
		}
		return cwd == dir
	}
	started, err := processStart(proc, pf.pid)
	if err != nil || pf.started == 0 {
		return true
	}
	d := started - pf.started
	return d >= -postmasterStartSlack && d <= postmasterStartSlack
}

// postmasterStartSlack is how far, in seconds, a postmaster's start as the
// kernel saw it may be from the one it wrote: it writes it right after it
// starts, and /proc rounds to clock ticks.
const postmasterStartSlack = 5

// userHZ is the unit of /proc/PID/stat's start time: Linux shows clock
// ticks to user space at 100 Hz on every architecture.
const userHZ = 100

// processStart returns when process pid started, in seconds since the
// epoch, from procfs: the boot time in stat plus the start in ticks in
// PID/stat.
func processStart(proc string, pid int) (int64, error) {
	st, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name in parentheses may hold spaces: count after it.
	i := bytes.LastIndexByte(st, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: unreadable stat", pid)
	}
	fields := strings.Fields(string(st[i+1:]))
	const startField = 22 - 3 // field 22 of stat, counted after pid and comm, from 1
	if len(fields) <= startField {
		return 0, fmt.Errorf("process %d: short stat", pid)
	}
	ticks, err := strconv.ParseInt(fields[startField], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process %d: start time: %w", pid, err)
	}
	sys, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(sys), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("boot time: %w", err)
			}
			return boot + ticks/userHZ, nil
		}
	}
	return 0, errors.New("boot time missing from stat")
}

// pidFile is what postmaster.pid says.
type pidFile struct {
	pid       int
	started   int64 // seconds since the epoch, 0 when not written
	port      int
	socketDir string
	listen    string
	status    string // "starting", "stopping", "ready", "standby" or ""
}

// readPidFile reads dataDir/postmaster.pid; fs.ErrNotExist when there is
// none, or not even a pid in it yet.
func readPidFile(dataDir string) (pidFile, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return pidFile{}, err
	}
	lines := strings.Split(string(b), "\n")
	field := func(i int) string { // 1-based, as PostgreSQL numbers them
		if i <= len(lines) {
			return strings.TrimSpace(lines[i-1])
		}
		return ""
	}
	var pf pidFile
	if pf.pid, err = strconv.Atoi(field(1)); err != nil {
		return pidFile{}, fmt.Errorf("postmaster.pid without a pid yet: %w", fs.ErrNotExist)
	}
	pf.started, _ = strconv.ParseInt(field(3), 10, 64)
	pf.port, _ = strconv.Atoi(field(4))
	pf.socketDir, pf.listen, pf.status = field(5), field(6), field(8)
	return pf, nil
}

// serverUser returns whom PostgreSQL runs as: nil when the runtime is not
// root (it runs PostgreSQL as itself), else OSUser or the owner of the data
// directory, never root.
func serverUser(name, dataDir string) (*osUser, error) {
	if os.Geteuid() != 0 {
		if cur, err := user.Current(); name != "" && (err != nil || cur.Username != name) {
			return nil, fmt.Errorf("the runtime cannot start PostgreSQL as %s: only root can switch users", name)
		}
		return nil, nil
	}
	var u *user.User
	var err error
	if name != "" {
		u, err = user.Lookup(name)
	} else {
		st, serr := os.Stat(dataDir)
		if serr != nil {
			return nil, serr
		}
		u, err = user.LookupId(strconv.FormatUint(uint64(st.Sys().(*syscall.Stat_t).Uid), 10))
	}
	if err != nil {
		return nil, fmt.Errorf("server user: %w", err)
	}
	if u.Uid == "0" {
		return nil, errors.New("PostgreSQL never runs as root: set the OS user to run it as (RecoveryConfig.OSUser)")
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("server user %s: %w", u.Username, err)
	}
	ou := &osUser{name: u.Username, uid: uid, gid: gid, home: u.HomeDir}
	ids, _ := u.GroupIds() // supplementary groups; none is fine
	for _, id := range ids {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			ou.groups = append(ou.groups, uint32(g))
		}
	}
	return ou, nil
}

// CheckRelease implements guest.ReleaseChecker in the guest: see there.
func (r *Runtime) CheckRelease(ctx context.Context, major int, binDir string) error {
	if major <= 0 {
		return fmt.Errorf("check release: major release %d", major)
	}
	pgCtl, err := findPgCtl(binDir, strconv.Itoa(major))
	if err != nil {
		return fmt.Errorf("%w: %v: install PostgreSQL %d's server binaries or name their bin directory", guest.ErrReleaseMismatch, err, major)
	}
	return checkRelease(ctx, pgCtl, major)
}

// checkRelease refuses pg_ctl of another major release than the cluster's
// (guest.ErrReleaseMismatch): it would start a postgres that cannot read
// the files, or, worse, a pg_ctl that guesses. Its version line is
// "pg_ctl (PostgreSQL) 18.4".
func checkRelease(ctx context.Context, pgCtl string, major int) error {
	out, err := exec.CommandContext(ctx, pgCtl, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", pgCtl, err)
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		return fmt.Errorf("%s --version: no version in %q", pgCtl, out)
	}
	// "18.4", "18beta1", "19devel": the major is the leading digits.
	version := fields[len(fields)-1]
	digits := strings.IndexFunc(version, func(r rune) bool { return r < '0' || r > '9' })
	if digits < 0 {
		digits = len(version)
	}
	got, err := strconv.Atoi(version[:digits])
	if err != nil {
		return fmt.Errorf("%s --version: no version in %q", pgCtl, out)
	}
	if got != major {
		return fmt.Errorf("%w: the cluster is PostgreSQL %d, %s is PostgreSQL %s: restore into a machine or bin directory of release %d",
			guest.ErrReleaseMismatch, major, pgCtl, version, major)
	}
	return nil
}

// findPgCtl finds pg_ctl: in binDir when given, else where Debian and the
// PGDG RPMs put the given major version, else on PATH.
func findPgCtl(binDir, major string) (string, error) { return findTool("pg_ctl", binDir, major) }

// findTool finds PostgreSQL's program name of release major: in binDir
// when set, else in the usual places of Debian and the PGDG packages,
// then on PATH.
func findTool(name, binDir, major string) (string, error) {
	dirs := []string{"/usr/lib/postgresql/" + major + "/bin", "/usr/pgsql-" + major + "/bin"}
	if binDir != "" {
		if err := checkGuestPath("bin directory", binDir); err != nil {
			return "", err
		}
		dirs = []string{binDir}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if binDir != "" {
		return "", fmt.Errorf("no %s in %s", name, binDir)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("no %s for PostgreSQL %s in %s or on PATH (set the bin directory)", name, major, strings.Join(dirs, " or "))
	}
	return p, nil
}

// run changes the data directory, starts the server and serves it until
// recovery has ended.
func (rec *recovery) run(ctx context.Context, fetch guest.FetchFunc) (res guest.RecoveryResult, err error) {
	log := rec.rt.cfg.Logger
	dataDir := rec.cfg.DataDir
	if err := rec.handOver(); err != nil {
		return res, err
	}
	svc, err := startRestoreService(ctx, filepath.Join(dataDir, "pg_wal"), rec.owner, rec.rt.cfg.Self, fetch, rec.prefetch, log)
	if err != nil {
		return res, err
	}
	restoreCommand := svc.Command()
	defer func() {
		svc.Close()
		st := svc.spool.Stats()
		res.Fetched, res.Requests, res.FromSpool, res.Waited, res.InFlight = st.Fetched, st.Requests, st.FromSpool, st.Waited, st.InFlight
		res.Log = rec.logTail()
	}()

	settings := map[string]string{"restore_command": restoreCommand}
	if rec.cfg.ConfigFile != "" {
		// The configuration may be the original's, running beside this
		// one: its pid file, and before 15 its statistics folder, are not
		// this server's (Debian sets both). Settings may say otherwise.
		settings["external_pid_file"] = ""
		if rec.major < 15 {
			settings["stats_temp_directory"] = "pg_stat_tmp"
		}
	}
	keys := make([]string, 0, len(rec.cfg.Settings))
	for k, v := range rec.cfg.Settings {
		settings[k] = v
		keys = append(keys, k)
	}
	if err := rewriteAutoConf(rec.root, settings, nil, rec.owner); err != nil {
		return res, err
	}
	if err := rec.start(); err != nil {
		return res, errors.Join(err, rec.dropRestoreCommand(nil))
	}
	who := "the runtime's user"
	if rec.owner != nil {
		who = rec.owner.name
	}
	log.Info("recovery started", "data_dir", dataDir, "user", who, "settings", keys, "prefetch", rec.prefetch)

	w := &recoveryWatch{rec: rec}
	defer w.close()
	state, err := w.wait(ctx)
	if err != nil {
		return res, errors.Join(err, rec.abandon(w))
	}
	if state == endShutdown {
		log.Info("recovery ended: the server shut down at the target", "data_dir", dataDir)
		return res, rec.dropRestoreCommand(nil)
	}
	res, err = w.result(ctx, state)
	if err != nil {
		// Recovery has ended; only the report failed. The server stays,
		// without restore_command.
		return res, errors.Join(err, rec.dropRestoreCommand(&w.pid))
	}
	if err := w.resetRestoreCommand(ctx); err != nil {
		return res, err
	}
	log.Info("recovery ended", "data_dir", dataDir, "promoted", res.Promoted, "paused", res.Paused,
		"timeline", res.Timeline, "lsn", res.LSN)
	return res, nil
}

// handOver gives the data directory and the tablespace directories its
// links name (checked by planRecovery against the restore's own) to the
// server user, and writes the files that start a recovery.
func (rec *recovery) handOver() error {
	if rec.owner != nil {
		if err := chownTree(rec.root, rec.owner); err != nil {
			return err
		}
		for oid, dir := range rec.links {
			ts, err := openDir("tablespace "+strconv.FormatUint(uint64(oid), 10), dir)
			if err != nil {
				return err
			}
			err = chownTree(ts, rec.owner)
			ts.Close()
			if err != nil {
				return err
			}
		}
	}
	if err := rec.root.Chmod(".", 0o700); err != nil {
		return err
	}
	files := []struct{ name, content string }{
		{"backup_label", rec.cfg.BackupLabel}, {"tablespace_map", rec.cfg.TablespaceMap}, {"recovery.signal", ""},
	}
	for _, f := range files {
		if f.content == "" && f.name != "recovery.signal" {
			continue
		}
		if err := writeFileIn(rec.root, f.name, []byte(f.content), rec.owner); err != nil {
			return err
		}
	}
	return nil
}

// restoreCommand runs self in fetch mode on sock; when the server runs as
// another user (owner), through a copy of the executable in spool that
// it can run.
func restoreCommand(self []string, owner *osUser, spool *os.Root, sock string) (string, error) {
	if len(self) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("find the runtime's executable: %w", err)
		}
		self = []string{exe}
	}
	exe := self[0]
	if owner != nil {
		exe = filepath.Join(spool.Name(), "pglogship-runtime")
		if err := copyExecutable(self[0], spool, filepath.Base(exe)); err != nil {
			return "", err
		}
	}
	parts := []string{shellQuote(exe)}
	for _, a := range self[1:] {
		parts = append(parts, shellQuote(a))
	}
	// %f and %p are WAL file names and pg_wal/RECOVERY*: safe unquoted.
	parts = append(parts, "fetch", shellQuote(sock), "%f", "%p")
	return strings.Join(parts, " "), nil
}

// copyExecutable copies src to a new file dst in dir.
func copyExecutable(src string, dir *os.Root, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy the runtime for the server user: %w", err)
	}
	defer in.Close()
	out, err := dir.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o555)
	if err != nil {
		return fmt.Errorf("copy the runtime for the server user: %w", err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(0o555) // the handle: the folder may be the server user's
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy the runtime for the server user: %w", err)
	}
	return nil
}

// command builds a command that runs as the server user, in the data
// directory, without the runtime's PG* environment.
func (rec *recovery) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = rec.cfg.DataDir
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || rec.owner != nil && (k == "HOME" || k == "USER" || k == "LOGNAME") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	if u := rec.owner; u != nil {
		cmd.Env = append(cmd.Env, "HOME="+u.home, "USER="+u.name, "LOGNAME="+u.name)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: u.groups}}
	}
	return cmd
}

// start starts the server with pg_ctl, its output appended to the
// recovery log, without waiting.
func (rec *recovery) start() error {
	// Inside the data directory only: log (or the file) may be a link.
	logDir := filepath.Dir(RecoveryLog)
	if err := rec.root.MkdirAll(logDir, 0o700); err != nil {
		return fmt.Errorf("recovery log: %w (it must lie inside the data directory)", err)
	}
	d, err := rec.root.Open(logDir)
	if err == nil {
		err = privateHandle(d, rec.owner)
		d.Close()
	}
	if err != nil {
		return fmt.Errorf("recovery log: %w", err)
	}
	f, err := rec.root.OpenFile(RecoveryLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("recovery log: %w (it must lie inside the data directory)", err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("recovery log %s: not a file", rec.logPath)
	}
	if err == nil && rec.owner != nil {
		err = f.Chown(rec.owner.uid, rec.owner.gid)
	}
	f.Close()
	if err != nil {
		return err
	}
	rec.logStart = st.Size()
	// A stale postmaster.pid (its process is gone, see checkNotRunning)
	// would read as a server that started and stopped.
	if err := rec.root.Remove("postmaster.pid"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// pg_ctl puts -D, -l and -o into a shell command: the paths were
	// checked (checkGuestPath), -D and -l are double-quoted by pg_ctl,
	// and in -o the paths are single-quoted (planRecovery refused quotes
	// in them), so that no shell character in them (; & |) is run.
	opts := "-c logging_collector=off -c lc_messages=C"
	if rec.cfg.ConfigFile != "" {
		// data_directory in the file (Debian sets it: the original's)
		// would win over -D; the command line wins over the file.
		opts += " -c 'config_file=" + rec.cfg.ConfigFile + "' -c 'data_directory=" + rec.cfg.DataDir + "'"
	}
	out, err := rec.command(rec.pgCtl, "start", "-W", "-D", rec.cfg.DataDir, "-l", rec.logPath, "-o", opts).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// stop stops the server (fast, then immediate).
func (rec *recovery) stop() error {
	out, err := rec.command(rec.pgCtl, "stop", "-D", rec.cfg.DataDir, "-m", "fast", "-w", "-t", "60").CombinedOutput()
	if err == nil {
		return nil
	}
	out2, err2 := rec.command(rec.pgCtl, "stop", "-D", rec.cfg.DataDir, "-m", "immediate", "-w", "-t", "30").CombinedOutput()
	if err2 != nil {
		return fmt.Errorf("stop the server: %w: %s; %s", err2, bytes.TrimSpace(out), bytes.TrimSpace(out2))
	}
	return nil
}

// abandon stops a server that is still recovering (it cannot go on once
// the runtime stops serving restore_command) and removes restore_command.
func (rec *recovery) abandon(w *recoveryWatch) error {
	w.close()
	var err error
	if pf, perr := readPidFile(rec.cfg.DataDir); perr == nil && alive(pf.pid) {
		rec.rt.cfg.Logger.Warn("stopping the server: recovery cannot go on without the runtime", "data_dir", rec.cfg.DataDir)
		err = rec.stop()
	}
	return errors.Join(err, rec.dropRestoreCommand(nil))
}

// recoveryOnly are the settings a recovery sets that must not outlive
// it: left in postgresql.auto.conf, a later image of the instance would
// carry the old target into its own restore.
var recoveryOnly = []string{"restore_command", "recovery_target", "recovery_target_lsn", "recovery_target_name",
	"recovery_target_time", "recovery_target_xid", "recovery_target_inclusive", "recovery_target_timeline",
	"recovery_target_action"}

// dropRestoreCommand removes the recoveryOnly settings from
// postgresql.auto.conf and, for a running server (pid > 0), makes it
// reload.
func (rec *recovery) dropRestoreCommand(pid *int) error {
	if err := rewriteAutoConf(rec.root, nil, recoveryOnly, rec.owner); err != nil {
		return err
	}
	if pid != nil {
		return syscall.Kill(*pid, syscall.SIGHUP)
	}
	return nil
}

// readLog returns what the server logged during this recovery.
func (rec *recovery) readLog() string {
	f, err := rec.root.Open(RecoveryLog) // a link out of the data directory is not read
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(rec.logStart, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// logTail returns the last lines of readLog.
func (rec *recovery) logTail() string {
	text := rec.readLog()
	if len(text) > logTailBytes {
		text = text[len(text)-logTailBytes:]
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "\n")
}

// exited tells how a server that stopped ended its recovery, from its log:
// shut down at the target, or failed with PostgreSQL's own report of why
// (lastReport).
func (rec *recovery) exited() (endState, error) {
	text := rec.readLog()
	if strings.Contains(text, msgShutdownAtTarget) {
		return endShutdown, nil
	}
	why := lastReport(text)
	if strings.Contains(text, msgTargetNotReached) {
		return 0, fmt.Errorf("%w: the server stopped: %s", guest.ErrTargetNotReached, why)
	}
	return 0, fmt.Errorf("%w: %s", guest.ErrRecoveryFailed, why)
}

// Bounds of lastReport, so that a failed recovery's error stays an error
// message and not a log.
const (
	reportLines     = 12
	reportLineBytes = 1 << 10
	reportBytes     = 4 << 10
)

// reportFields are the lines PostgreSQL writes after an error's message,
// each with the same prefix (log_line_prefix) as the message.
var reportFields = []string{"DETAIL:  ", "HINT:  ", "CONTEXT:  ", "QUERY:  ", "STATEMENT:  ", "LOCATION:  "}

// lastReport returns why a stopped server stopped, from its log: the last
// FATAL or PANIC report (the severities that stop a server; connections
// turned away while it started are not the reason), else the last ERROR
// report, else the last line. A report is its line, as logged, and the
// DETAIL, HINT and CONTEXT lines (and the tab-indented lines of a message
// of several lines) that follow it with the same prefix, those without the
// prefix, one a line as psql shows them; bounded in lines and bytes.
func lastReport(text string) string {
	lines := strings.Split(text, "\n")
	var fatal, errLine, last = -1, -1, -1
	for i, line := range lines {
		if strings.TrimSpace(line) == "" {
			continue
		}
		last = i
		switch sev, _ := severity(line); sev {
		case "FATAL", "PANIC":
			if !strings.Contains(line, msgTurnedAway) {
				fatal = i
			}
		case "ERROR":
			errLine = i
		}
	}
	at := fatal
	if at < 0 {
		at = errLine
	}
	if at < 0 {
		if last < 0 {
			return "the server logged nothing"
		}
		return clip(lines[last], reportLineBytes)
	}
	_, prefix := severity(lines[at])
	out := []string{clip(lines[at], reportLineBytes)}
	size := len(out[0])
	for _, line := range lines[at+1:] {
		var add string
		switch rest, ok := strings.CutPrefix(line, prefix); {
		case strings.HasPrefix(line, "\t"): // the next line of a message of several
			add = line
		case ok && hasAnyPrefix(rest, reportFields):
			add = rest
		}
		if add == "" || len(out) == reportLines {
			break
		}
		add = clip(add, reportLineBytes)
		if size += len(add) + 1; size > reportBytes {
			break
		}
		out = append(out, add)
	}
	return strings.Join(out, "\n")
}

// severity returns the severity of a log line (ERROR, FATAL, PANIC, or
// "" for another) and the prefix before it: the first of them on the line,
// since a message may quote another.
func severity(line string) (sev, prefix string) {
	at := len(line)
	for _, s := range []string{"PANIC", "FATAL", "ERROR"} {
		if i := strings.Index(line, s+":  "); i >= 0 && i < at {
			sev, at = s, i
		}
	}
	if sev == "" {
		return "", ""
	}
	return sev, line[:at]
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// startFailed tells whether a server that has not written its pid file yet
// has already given up.
func (rec *recovery) startFailed() bool {
	text := rec.readLog()
	return strings.Contains(text, "FATAL:") || strings.Contains(text, "PANIC:") || strings.Contains(text, msgShutDown)
}

// recoveryWatch follows the server until recovery has ended, through the
// runtime's connection settings pointed at the recovered server.
type recoveryWatch struct {
	rec      *recovery
	conn     *pgx.Conn
	version  int
	pid      int
	logOff   int64 // how far the log has been read for msgReadOnly
	readOnly bool  // the server accepts read-only connections
}

func (w *recoveryWatch) close() {
	if w.conn != nil {
		w.conn.Close(context.Background())
		w.conn = nil
	}
}

// wait polls, on the runtime's clock, until the server promoted, paused at
// the target, or stopped.
func (w *recoveryWatch) wait(ctx context.Context) (endState, error) {
	rec := w.rec
	clk := rec.rt.cfg.Clock
	started := clk.Now()
	for {
		pf, err := readPidFile(rec.cfg.DataDir)
		switch {
		case err == nil:
			if !alive(pf.pid) {
				return rec.exited()
			}
			w.pid = pf.pid
			// "standby" is reported from the start of recovery on; a hot
			// standby takes connections only once consistent, and
			// connecting earlier would only fill the log with refusals.
			if pf.status == "ready" || pf.status == "standby" && w.sawReadOnly() {
				state, err := w.poll(ctx, pf)
				if err != nil || state != 0 {
					return state, err
				}
			}
		case w.pid != 0:
			return rec.exited() // the pid file went: the server stopped
		case rec.startFailed():
			return rec.exited()
		case clk.Since(started) > rec.rt.cfg.StartTimeout:
			return 0, fmt.Errorf("the server did not start within %v: %s", rec.rt.cfg.StartTimeout, rec.logTail())
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-clk.After(rec.rt.cfg.PollInterval):
		}
	}
}

// sawReadOnly tells whether the server has logged that it takes read-only
// connections, reading the log on from where it stopped last time.
func (w *recoveryWatch) sawReadOnly() bool {
	if w.readOnly {
		return true
	}
	if w.logOff == 0 {
		w.logOff = w.rec.logStart
	}
	f, err := w.rec.root.Open(RecoveryLog)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, w.logOff, 1<<40))
	if err != nil {
		return false
	}
	end := bytes.LastIndexByte(b, '\n') + 1 // whole lines only
	w.readOnly = bytes.Contains(b[:end], []byte(msgReadOnly))
	w.logOff += int64(end)
	return w.readOnly
}

// poll asks the server whether recovery has ended; 0 means not yet.
func (w *recoveryWatch) poll(ctx context.Context, pf pidFile) (endState, error) {
	if w.conn == nil {
		conn, err := w.connect(ctx, pf)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000") {
				return 0, fmt.Errorf("connect to the recovered server: %w", err)
			}
			w.rec.rt.cfg.Logger.Debug("recovered server not reachable yet", "err", err)
			return 0, nil
		}
		w.conn = conn
		if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&w.version); err != nil {
			w.close()
			return 0, nil
		}
	}
	var inRecovery bool
	if err := w.conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		w.close() // reconnect next time
		return 0, nil
	}
	if !inRecovery {
		return endPromoted, nil
	}
	q := "SELECT pg_get_wal_replay_pause_state() = 'paused'"
	if w.version < 140000 {
		q = "SELECT pg_is_wal_replay_paused()"
	}
	var paused bool
	if err := w.conn.QueryRow(ctx, q).Scan(&paused); err != nil {
		w.close() // promoted between the two queries, or gone
		return 0, nil
	}
	if paused {
		return endPaused, nil
	}
	return 0, nil
}

// connect reaches the recovered server with the runtime's connection
// settings, at the port and socket folder or address its pid file names.
func (w *recoveryWatch) connect(ctx context.Context, pf pidFile) (*pgx.Conn, error) {
	c := w.rec.rt.cfg.Conn
	c.Port = pf.port
	switch {
	case strings.HasPrefix(c.Host, "/") && pf.socketDir != "":
		c.Host = pf.socketDir
	case strings.HasPrefix(c.Host, "/"):
	case pf.listen == "" && pf.socketDir != "": // no TCP
		c.Host = pf.socketDir
	case pf.listen != "*" && pf.listen != "0.0.0.0" && pf.listen != "::" && pf.listen != "":
		c.Host = pf.listen
	}
	cctx, cancel := clock.WithTimeout(w.rec.rt.cfg.Clock, ctx, 30*time.Second)
	defer cancel()
	return Connect(cctx, c)
}

// result asks the server where recovery ended.
func (w *recoveryWatch) result(ctx context.Context, state endState) (guest.RecoveryResult, error) {
	res := guest.RecoveryResult{Promoted: state == endPromoted, Paused: state == endPaused}
	var lsn *string
	var at *time.Time
	err := w.conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()").Scan(&lsn, &at)
	if err != nil {
		return res, fmt.Errorf("read where recovery ended: %w", err)
	}
	if lsn != nil {
		if res.LSN, err = wal.ParseLSN(*lsn); err != nil {
			return res, err
		}
	}
	if at != nil {
		res.LastReplayTime = *at
	}
	if state == endPaused {
		err = w.conn.QueryRow(ctx, "SELECT timeline_id FROM pg_control_checkpoint()").Scan(&res.Timeline)
	} else {
		var seg string
		if err = w.conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&seg); err == nil {
			var f wal.FileName
			f, err = wal.ParseFileName(seg)
			res.Timeline = f.Timeline
		}
	}
	if err != nil {
		return res, fmt.Errorf("read the timeline: %w", err)
	}
	return res, nil
}

// resetRestoreCommand removes the recoveryOnly settings with ALTER SYSTEM
// and reloads, or, if that fails, edits the file and signals the
// postmaster.
func (w *recoveryWatch) resetRestoreCommand(ctx context.Context) error {
	var err error
	for _, k := range recoveryOnly {
		if _, err = w.conn.Exec(ctx, "ALTER SYSTEM RESET "+k); err != nil { // k is one of the constants
			break
		}
	}
	if err == nil {
		_, err = w.conn.Exec(ctx, "SELECT pg_reload_conf()")
	}
	if err == nil {
		return nil
	}
	w.rec.rt.cfg.Logger.Warn("ALTER SYSTEM RESET of the recovery settings failed; editing the file", "err", err)
	return w.rec.dropRestoreCommand(&w.pid)
}
