package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/pglogship/pglogship/guest"
)

var _ guest.Dumper = (*Runtime)(nil)

// maxDatabaseName is PostgreSQL's NAMEDATALEN - 1.
const maxDatabaseName = 63

// pgDumpVersion reads the major release from pg_dump --version, as in
// "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
var pgDumpVersion = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// Dump implements guest.Dumper in the guest: see there.
func (r *Runtime) Dump(ctx context.Context, cfg guest.DumpConfig) (guest.DumpResult, error) {
	var res guest.DumpResult
	if err := checkDump(cfg); err != nil {
		return res, err
	}
	major, ok := clusterMajor(cfg.DataDir)
	if !ok {
		return res, fmt.Errorf("dump: %s holds no PostgreSQL cluster (no PG_VERSION)", cfg.DataDir)
	}
	release := strconv.Itoa(major)
	pgDump, err := findTool("pg_dump", cfg.BinDir, release)
	if err != nil {
		return res, fmt.Errorf("%w: %v: install PostgreSQL %s's client programs in the guest (Debian: apt-get install postgresql-client-%s)",
			guest.ErrNoPgDump, err, release, release)
	}
	out, err := exec.CommandContext(ctx, pgDump, "--version").Output()
	m := pgDumpVersion.FindSubmatch(out)
	if err != nil || m == nil {
		return res, fmt.Errorf("%w: %s --version: %q (%v)", guest.ErrNoPgDump, pgDump, strings.TrimSpace(string(out)), err)
	}
	if res.Version, _ = strconv.Atoi(string(m[1])); res.Version != major {
		return res, fmt.Errorf("%w: %s is of PostgreSQL %d, the server of %d: install PostgreSQL %d's client programs (Debian: postgresql-client-%d) or name their bin directory",
			guest.ErrNoPgDump, pgDump, res.Version, major, major, major)
	}
	if cfg.Port == 0 { // where the server says it listens
		pf, err := readPidFile(cfg.DataDir)
		if err != nil || pf.port == 0 {
			return res, fmt.Errorf("dump: no port given, and none in the server's postmaster.pid: %v", err)
		}
		cfg.Port = pf.port
		cfg.SocketDir = cmp.Or(cfg.SocketDir, pf.socketDir)
	}
	if err := os.Mkdir(cfg.Dir, 0o700); err != nil {
		return res, fmt.Errorf("dump: %w", err)
	}
	env := r.dumpEnv(cfg)
	for _, db := range cfg.Databases {
		dir := filepath.Join(cfg.Dir, db)
		cmd := exec.CommandContext(ctx, pgDump, "--format=directory", "--file="+dir, "--no-password")
		// The name goes by the environment: as an argument, one holding
		// "=" would be read as a connection string.
		cmd.Env = append(env, "PGDATABASE="+db)
		if out, err := cmd.CombinedOutput(); err != nil {
			return res, fmt.Errorf("dump %s: pg_dump: %v: %s", db, err, tail(out, 2048))
		}
		size, err := dirSize(dir)
		if err != nil {
			return res, fmt.Errorf("dump %s: %w", db, err)
		}
		res.Dumps = append(res.Dumps, guest.DatabaseDump{Database: db, Dir: dir, Bytes: size})
		r.cfg.Logger.Info("database dumped", "database", db, "dir", dir, "bytes", size)
	}
	return res, nil
}

// checkDump checks a dump's configuration before anything runs.
func checkDump(cfg guest.DumpConfig) error {
	if err := checkGuestPath("data directory", cfg.DataDir); err != nil {
		return err
	}
	if err := checkGuestPath("dump directory", cfg.Dir); err != nil {
		return err
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return fmt.Errorf("dump: port %d", cfg.Port)
	}
	if len(cfg.Databases) == 0 {
		return errors.New("dump: no database named")
	}
	seen := map[string]bool{}
	for _, db := range cfg.Databases {
		switch {
		case db == "" || db == "." || db == ".." || strings.ContainsAny(db, "/\x00") || len(db) > maxDatabaseName:
			return fmt.Errorf("dump: database name %q: 1 to %d bytes, without '/' or NUL, and not \"..\" or \".\" itself", db, maxDatabaseName)
		case seen[db]:
			return fmt.Errorf("dump: database %s named twice", db)
		}
		seen[db] = true
	}
	return nil
}

// dumpEnv is pg_dump's environment: the runtime's without its PG*
// variables, and the connection the runtime itself uses, at cfg's
// server. The password goes by the environment, never an argument.
func (r *Runtime) dumpEnv(cfg guest.DumpConfig) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "PG") {
			env = append(env, kv)
		}
	}
	c := r.cfg.Conn
	if cfg.SocketDir != "" && c.socket() {
		c.Host = cfg.SocketDir
	}
	env = append(env, "PGHOST="+c.Host, "PGPORT="+strconv.Itoa(cfg.Port), "PGUSER="+c.User, "PGSSLMODE="+c.sslMode(),
		"PGAPPNAME=pglogship export")
	if c.Password != "" {
		env = append(env, "PGPASSWORD="+c.Password)
	}
	if c.PassFile != "" {
		env = append(env, "PGPASSFILE="+c.PassFile)
	}
	if c.SSLRootCert != "" {
		env = append(env, "PGSSLROOTCERT="+c.SSLRootCert)
	}
	return env
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}

// tail is the end of a program's output, at most n bytes.
func tail(out []byte, n int) string {
	s := strings.TrimSpace(string(out))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
