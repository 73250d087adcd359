package testenv

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// corpusClusterDir holds, in the corpus's folder, the cluster that wrote
// the corpus as initdb left it, and corpusClusterDir+".json" its roles.
const corpusClusterDir = "cluster"

type corpusRoles struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

func saveCorpusCluster(tb testing.TB, pg *Postgres, dst string) {
	tb.Helper()
	if out, err := exec.Command("cp", "-a", pg.DataDir, dst).CombinedOutput(); err != nil {
		tb.Fatalf("walcorpus: save the cluster: %v\n%s", err, out)
	}
	b, _ := json.Marshal(corpusRoles{User: pg.User, Password: pg.Password})
	mustWriteFile(tb, dst+".json", b, 0o600)
}

// StartCorpusPostgres starts a copy of the cluster that wrote WALCorpus(tb,
// n), as it was before that WAL, so its system identifier is the corpus's:
// the runtime ships the corpus from its temporary folder, and pgBackRest
// archives it, as this server's WAL. Settings work as for StartPostgres.
func StartCorpusPostgres(tb testing.TB, n int, cfg PostgresConfig) *Postgres {
	tb.Helper()
	src := filepath.Join(corpusDir(tb, n), corpusClusterDir)
	b, err := os.ReadFile(src + ".json")
	if err != nil {
		tb.Fatalf("walcorpus: %v: remove %s to regenerate the corpus", err, filepath.Dir(src))
	}
	var roles corpusRoles
	if err := json.Unmarshal(b, &roles); err != nil {
		tb.Fatalf("walcorpus: %s: %v", src+".json", err)
	}
	acct := serverAccount(tb)
	data := filepath.Join(UserDir(tb, acct.Name), "data")
	if out, err := exec.Command("cp", "-a", src, data).CombinedOutput(); err != nil {
		tb.Fatalf("walcorpus: copy the cluster: %v\n%s", err, out)
	}
	return StartPostgresOn(tb, data, &Postgres{account: acct, User: roles.User, Password: roles.Password,
		BinDir: binDirOf(tb, CorpusMajor(tb))}, cfg)
}

// CorpusControlFile is the pg_control of the cluster that wrote
// WALCorpus(tb, n), for tools that check WAL against it (pgBackRest's
// archive-push reads pg1-path/global/pg_control).
func CorpusControlFile(tb testing.TB, n int) string {
	tb.Helper()
	return filepath.Join(corpusDir(tb, n), corpusClusterDir, "global", "pg_control")
}

// Command returns cmd for name and args run as the server's OS user, with
// PG* variables removed from the environment.
func (p *Postgres) Command(name string, args ...string) *exec.Cmd {
	return commandAs(p.account, name, args...)
}

// Shell returns `sh -c script` run as the server's OS user in dir, the way
// PostgreSQL runs archive_command and restore_command: when root, by
// switching credentials in the child itself, so no runuser (and its PAM
// session) is timed along with the command.
func (p *Postgres) Shell(dir, script string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	if os.Geteuid() == 0 && p.account.UID != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(p.account.UID), Gid: uint32(p.account.GID)}}
	}
	return cmd
}
