// Package testenv starts real servers on loopback for integration tests:
// a throw-away PostgreSQL cluster (initdb, pg_ctl) and an OpenSSH sshd with
// freshly generated host and client keys. Everything listens on 127.0.0.1
// (and on unix sockets in private directories) and is stopped and removed in
// t.Cleanup.
//
// PostgresConfig.Major picks the release: 13 to 18 are supported, 12 is
// there to be refused. Debian's is used where installed (15 on Debian 12);
// the others are the npm registry's self-contained server binaries
// (Releases, each pinned by its integrity hash), fetched once into
// ReleasesDir() by scripts/setup or on first use. Those trees hold only
// initdb, pg_ctl and postgres: Psql and pgbench use Debian's, which talk to
// every release.
//
// StartMinIO runs a MinIO server (the S3-compatible store for
// repository/s3) with random root credentials and its data in a temporary
// folder. MinIO is built from its Go module at MinIOVersion into
// CacheDir()/bin once per machine (scripts/setup does it ahead of the
// tests, since a cold build takes minutes).
//
// StartVM boots a real Debian 12 VM under QEMU with PostgreSQL 15 (cluster
// 15/main, archive_mode on, wal_level replica), or with VMConfig.Major 18
// the npm registry's PostgreSQL 18 baked into the image (GuestReleaseDataDir
// on port GuestReleasePort), and OpenSSH, reachable only
// through a forwarded port on 127.0.0.1, with QMP and qemu-guest-agent on
// unix sockets. Its image is built once by GuestImage (as root, with
// debootstrap from the Debian mirror) and cached in CacheDir()/vm, keyed on
// the recipe; every VM boots a qcow2 overlay, or a disk of the caller's.
// QEMU runs under TCG unless a probe boot shows that KVM works, since a
// /dev/kvm can exist and still hang the guest ($PGLOGSHIP_QEMU_ACCEL forces
// one). A boot costs about a minute under TCG, so tests share VMs where
// they can.
//
// Tests that use this package never skip because a binary is missing: a
// missing PostgreSQL, OpenSSH or QEMU binary fails the test with the apt-get
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
