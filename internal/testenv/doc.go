// Package testenv starts real servers on loopback for integration tests:
// a throw-away PostgreSQL cluster (initdb, pg_ctl) and an OpenSSH sshd with
// freshly generated host and client keys. Everything listens on 127.0.0.1
// (and on unix sockets in private directories) and is stopped and removed in
// t.Cleanup.
//
// Tests that use this package never skip because a binary is missing: a
// missing PostgreSQL or OpenSSH binary fails the test with the apt-get
// command that installs it, so CI cannot pass by silently testing nothing.
// Only `go test -short` skips, through SkipIfShort, for a quick local loop.
//
// As root, PostgreSQL runs as the "postgres" OS user (initdb refuses root)
// and sshd logs that user in by default, so a command run over SSH reaches
// the test PostgreSQL by peer authentication on its unix socket. As any
// other user, both run as and log in the current user.
package testenv

import "testing"

// SkipIfShort skips t when the tests run with -short; that is the only
// reason an integration test may skip.
func SkipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
}
