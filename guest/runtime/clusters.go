package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
