package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const installPgBackRest = "apt-get update && apt-get install -y pgbackrest"

// PgBackRestConfig configures NewPgBackRest.
type PgBackRestConfig struct {
	// Stanza names the stanza; empty: "pglogship".
	Stanza string
	// Settings are [global] options over NewPgBackRest's (a posix
	// repository, lock, log and spool folders in the private folder,
	// log-level-console=warn, log-level-file=off), such as
	// compress-type, archive-async or process-max.
	Settings map[string]string
	// NoStanza skips stanza-create: the repository is elsewhere
	// (repo1-host) and its stanza is made there.
	NoStanza bool
}

// PgBackRest is pgBackRest set up for one test cluster and nothing else:
// its configuration file and its posix repository, lock, log and spool
// folders live in a private folder owned by the server's OS user, every
// command runs as that user and names the configuration file and an
// include folder of its own, so /etc/pgbackrest.conf and /etc/pgbackrest
// are never read. Nothing listens on the network: the repository is a
// folder and the cluster is local.
type PgBackRest struct {
	Bin    string // the pgbackrest executable
	Dir    string // the private folder
	Config string // the configuration file
	Repo   string // the repository's folder (repo1-path)
	Stanza string

	pg *Postgres
}

// NewPgBackRest writes the configuration for pg (pg1-path, port and socket
// folder) and creates the stanza, which reads the system identifier from
// the running server. A missing pgbackrest fails t with the command that
// installs it.
func NewPgBackRest(t testing.TB, pg *Postgres, cfg PgBackRestConfig) *PgBackRest {
	t.Helper()
	bin := requireBinary(t, "pgbackrest", installPgBackRest)
	dir := UserDir(t, pg.OSUser)
	p := &PgBackRest{
		Bin: bin, Dir: dir, Config: filepath.Join(dir, "pgbackrest.conf"), Repo: filepath.Join(dir, "repo"),
		Stanza: cfg.Stanza, pg: pg,
	}
	if p.Stanza == "" {
		p.Stanza = "pglogship"
	}
	global := map[string]string{
		"repo1-type":        "posix",
		"repo1-path":        p.Repo,
		"lock-path":         filepath.Join(dir, "lock"),
		"log-path":          filepath.Join(dir, "log"),
		"spool-path":        filepath.Join(dir, "spool"),
		"log-level-console": "warn",
		"log-level-file":    "off",
	}
	for k, v := range cfg.Settings {
		global[k] = v
	}
	stanza := map[string]string{
		"pg1-path":        pg.DataDir,
		"pg1-port":        strconv.Itoa(pg.Port),
		"pg1-socket-path": pg.SocketDir,
		"pg1-user":        pg.User,
	}
	conf := "# written by internal/testenv\n" + iniSection("global", global) + iniSection(p.Stanza, stanza)
	mustWriteFile(t, p.Config, []byte(conf), 0o600)
	chown(t, pg.account, p.Config)
	for _, sub := range []string{"conf.d", "repo", "lock", "log", "spool"} {
		mustMkdir(t, filepath.Join(dir, sub), 0o700)
		chown(t, pg.account, filepath.Join(dir, sub))
	}
	if !cfg.NoStanza {
		p.Run(t, "stanza-create")
	}
	return p
}

func iniSection(name string, kv map[string]string) string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "\n[%s]\n", name)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, kv[k])
	}
	return b.String()
}

// Args returns pgbackrest's command line for args (options, then the
// command and its parameters): the executable, this set-up's
// configuration and the stanza first. Options given here override the
// configuration file's.
func (p *PgBackRest) Args(args ...string) []string {
	return append([]string{p.Bin, "--config=" + p.Config, "--config-include-path=" + filepath.Join(p.Dir, "conf.d"),
		"--stanza=" + p.Stanza}, args...)
}

// Run runs pgbackrest with args as the server's OS user and returns its
// output; a failure fails t with it.
func (p *PgBackRest) Run(t testing.TB, args ...string) string {
	t.Helper()
	argv := p.Args(args...)
	cmd := commandAs(p.pg.account, argv[0], argv[1:]...)
	cmd.Dir = p.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// RestoreCommand returns a restore_command that runs archive-get with the
// options given (such as --pg1-path of the restored data directory, which
// must be PostgreSQL's working directory) on %f and "%p". Options must not
// hold characters a shell treats specially.
func (p *PgBackRest) RestoreCommand(options ...string) string {
	return strings.Join(p.Args(append(options, "archive-get", "%f", `"%p"`)...), " ")
}

// WaitExited waits up to a minute until no process whose command line
// holds marker (a path given to it) runs any more, such as the detached
// worker of an asynchronous archive-get, which outlives the command that
// started it; it reports how many it saw. It never signals one.
func (p *PgBackRest) WaitExited(t testing.TB, marker string) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	seen := map[string]bool{}
	for {
		left := processesWith(marker)
		for _, pid := range left {
			seen[pid] = true
		}
		if len(left) == 0 {
			return len(seen)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: pgbackrest processes %v (holding %s) still run after a minute", left, marker)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesWith lists the pids whose command line holds marker.
func processesWith(marker string) []string {
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), marker) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// PgBackRestSupports tells whether the installed pgBackRest supports
// PostgreSQL major, from its version (Debian 12's 2.45 knows 15 at the
// most; 16 came with 2.47, 17 with 2.53, 18 with 2.56), and says why not.
// Benchmarks leave pgBackRest out of a comparison it cannot run.
func PgBackRestSupports(t testing.TB, major int) (bool, string) {
	t.Helper()
	bin := requireBinary(t, "pgbackrest", installPgBackRest)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("testenv: pgbackrest version: %v", err)
	}
	version := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "pgBackRest "))
	var maj, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &maj, &minor); err != nil {
		t.Fatalf("testenv: pgbackrest version %q: %v", out, err)
	}
	newest := 15
	for _, step := range []struct{ minor, major int }{{47, 16}, {53, 17}, {56, 18}} {
		if maj > 2 || minor >= step.minor {
			newest = step.major
		}
	}
	if maj > 2 || major <= newest {
		return true, ""
	}
	return false, fmt.Sprintf("pgBackRest %s supports PostgreSQL up to %d, not %d", version, newest, major)
}
