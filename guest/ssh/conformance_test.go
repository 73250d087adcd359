package ssh_test

import (
	"path/filepath"
	"testing"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/internal/testenv"
)

// The SSH deployer and the real runtime pass the conformance suite against
// a real sshd and PostgreSQL, logging in as the server's OS user.
func TestConformance(t *testing.T) {
	var e env
	var dir string
	guesttest.RunConformance(t, guesttest.Harness{
		New: func(t testing.TB) (guest.Deployer, guest.Target) {
			e = setup(t.(*testing.T))
			dir = filepath.Join(testenv.UserDir(t, e.pg.OSUser), "wal")
			return e.deployer(t.(*testing.T), nil), guest.Target{Machine: "db1", Address: e.sshd.Addr}
		},
		Dir: func(testing.TB) string { return dir },
		Archive: func(t testing.TB, _ guest.Runtime, n int) map[string][]byte {
			e.pg.SwitchWAL(t, n)
			return testenv.FolderFiles(t, dir)
		},
	})
}
