package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pglogship/pglogship/guest"
)

// DefaultClusterPlaces are where FindClusters looks for clusters no
// postmaster serves: Debian's and Ubuntu's pg_createcluster layout (the
// configuration under /etc/postgresql names the data directory), and the
// data directories of the PGDG and distribution packages of RPM systems.
var DefaultClusterPlaces = []string{
	"/etc/postgresql/*/*/postgresql.conf",
	"/var/lib/postgresql/*/*",
	"/var/lib/pgsql/*/data",
	"/var/lib/pgsql/data",
}

// FindClusters lists every PostgreSQL cluster of the machine whose
// process table is under procRoot ("/proc"): first those a running
// postmaster serves (a postmaster works in its data directory, whose
// postmaster.pid names it, its port and its first socket directory), then
// the data directories at places (globs: a data directory, or a
// postgresql.conf whose data_directory names one; DefaultClusterPlaces
// when nil) that no postmaster serves. A directory is a cluster when it
// holds PG_VERSION. Sorted by data directory; read-only. A postmaster's
// working directory can be read by its own OS user and root only: a
// runtime running as another user finds its clusters at places only.
func FindClusters(ctx context.Context, procRoot string, places []string) ([]guest.Cluster, error) {
	if places == nil {
		places = DefaultClusterPlaces
	}
	found := map[string]guest.Cluster{}
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("find clusters: %w", err)
	}
	for _, p := range procs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procRoot, p.Name(), "comm"))
		if err != nil {
			continue // gone, or not ours to read
		}
		if c := strings.TrimSpace(string(comm)); c != "postgres" && c != "postmaster" {
			continue
		}
		dir, err := os.Readlink(filepath.Join(procRoot, p.Name(), "cwd"))
		if err != nil {
			continue
		}
		if _, seen := found[dir]; seen {
			continue
		}
		if c, ok := runningCluster(dir, pid); ok {
			found[dir] = c
		}
	}
	for _, pattern := range places {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			return nil, fmt.Errorf("find clusters: place %q: %w", pattern, err)
		}
		for _, m := range matches {
			dir := m
			if filepath.Base(m) == "postgresql.conf" {
				if dir = confDataDir(m); dir == "" {
					continue
				}
			}
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				dir = real
			}
			if _, seen := found[dir]; seen {
				continue
			}
			if major, ok := clusterMajor(dir); ok {
				found[dir] = guest.Cluster{DataDir: dir, Major: major}
			}
		}
	}
	out := make([]guest.Cluster, 0, len(found))
	for _, c := range found {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b guest.Cluster) int { return strings.Compare(a.DataDir, b.DataDir) })
	return out, nil
}

// runningCluster reads the cluster in dir when the postmaster its
// postmaster.pid names is alive; pid is a process working in dir (the
// postmaster or one of its children).
func runningCluster(dir string, pid int) (guest.Cluster, bool) {
	major, ok := clusterMajor(dir)
	if !ok {
		return guest.Cluster{}, false
	}
	lines, err := readLines(filepath.Join(dir, "postmaster.pid"))
	if err != nil || len(lines) < 5 {
		return guest.Cluster{}, false
	}
	pmPID, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pmPID <= 0 {
		return guest.Cluster{}, false
	}
	if pmPID != pid {
		if err := syscall.Kill(pmPID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
			return guest.Cluster{}, false // a stale postmaster.pid
		}
	}
	port, _ := strconv.Atoi(strings.TrimSpace(lines[3]))
	return guest.Cluster{DataDir: dir, Major: major, Running: true, PID: pmPID, Port: port,
		SocketDir: strings.TrimSpace(lines[4])}, true
}

// clusterMajor reads a data directory's PG_VERSION.
func clusterMajor(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if err != nil {
		return 0, false
	}
	major, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return major, err == nil && major > 0
}

// confDataDir is the data_directory a postgresql.conf sets, or "".
func confDataDir(conf string) string {
	lines, err := readLines(conf)
	if err != nil {
		return ""
	}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		key, val, ok := strings.Cut(l, "=")
		if !ok || strings.TrimSpace(key) != "data_directory" {
			continue
		}
		val, _, _ = strings.Cut(val, "#")
		return strings.Trim(strings.TrimSpace(val), "'")
	}
	return ""
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// InstanceConn returns conn pointed at the running instance whose data
// directory is dataDir, as its postmaster.pid says: its port, and its
// socket directory when conn connects over a socket (or names no host;
// 127.0.0.1 when the instance has no socket). A TCP host is kept. The
// caller checks the server it reaches (checkDataDir): a stale pid file may
// name another server's port.
func InstanceConn(conn ConnConfig, dataDir string) (ConnConfig, error) {
	if !filepath.IsAbs(dataDir) {
		return conn, fmt.Errorf("instance %q: the data directory must be an absolute path", dataDir)
	}
	lines, err := readLines(filepath.Join(dataDir, "postmaster.pid"))
	switch {
	case errors.Is(err, fs.ErrPermission):
		return conn, fmt.Errorf("instance %s: the runtime's user cannot read its postmaster.pid (run it as the server's user or root): %w",
			dataDir, guest.ErrNoInstance)
	case err != nil || len(lines) < 5:
		return conn, fmt.Errorf("instance %s: no postmaster.pid (is it running?): %w", dataDir, guest.ErrNoInstance)
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil || port <= 0 || port > 65535 {
		return conn, fmt.Errorf("instance %s: postmaster.pid names no port: %w", dataDir, guest.ErrNoInstance)
	}
	conn.Port = port
	if conn.Host == "" || conn.socket() {
		conn.Host = "127.0.0.1"
		if sock := strings.TrimSpace(lines[4]); strings.HasPrefix(sock, "/") {
			conn.Host = sock
		}
	}
	return conn, nil
}

// checkDataDir checks that the server r reaches serves dataDir (the same
// directory, links resolved).
func (r *Runtime) checkDataDir(ctx context.Context, dataDir string) error {
	conn, err := r.connect(ctx)
	if err != nil {
		return fmt.Errorf("instance %s: %w", dataDir, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var served string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&served); err != nil {
		return fmt.Errorf("instance %s: %w", dataDir, err)
	}
	if sameDir(served, dataDir) {
		return nil
	}
	return fmt.Errorf("instance %s: the server at port %d serves %s: %w", dataDir, r.cfg.Conn.Port, served, guest.ErrNoInstance)
}

// sameDir tells whether a and b name one directory.
func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	return errA == nil && errB == nil && ra == rb
}
