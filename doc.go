// Package pglogship protects PostgreSQL running inside virtual machines (or
// on plain hosts) the way enterprise VM backup products do: image-level
// backups of the machine on a schedule, plus continuous shipping of
// PostgreSQL's write-ahead log (WAL), so an instance can be brought back to
// its latest state or to any point in time.
//
// # Parent and child jobs
//
// A backup job that contains a PostgreSQL machine is really two jobs.
//
// The parent job, named by the user (say "Daily DB Job"), takes an
// image-level backup of each machine: a restore point in the repository. It
// runs on its schedule or when started by hand. The backup is
// application-aware: PostgreSQL is put into backup mode (pg_backup_start and
// pg_backup_stop) around the snapshot, and the backup_label it returns is
// kept with the restore point, so the image plus WAL is a valid base for
// recovery.
//
// The child job, "Daily DB Job PostgreSQL Log Backup", exists as soon as the
// parent contains a PostgreSQL machine. It runs permanently in the
// background and ships WAL to the repository every interval (15 minutes by
// default, at most 480). Its life is a chain of child sessions:
//
//   - the first child session starts when the parent's schedule is enabled;
//   - every new parent session ends the running child session before the
//     parent runs, and a new child session starts after it, so a restore
//     point always precedes the WAL shipped after it;
//   - disabling the parent ends the child session.
//
// A child session deploys non-persistent runtime components into the guest
// OS over SSH when it starts, and stops and uninstalls them when it ends.
// Meanwhile PostgreSQL's archive_command keeps copying completed WAL into a
// temporary folder in the guest, using only what the guest already has, so
// nothing is lost between sessions. A WAL file leaves that folder only after
// the repository stored it durably and it was read back. Session records
// (state, counters, a log per interval, warnings) are kept in the
// configuration database.
//
// # PostgreSQL prerequisites
//
// PostgreSQL 13 or later; wal_level replica or logical; archive_mode on
// (changing it needs a restart, which pglogship never does for you);
// archive_command and archive_library empty or already set by pglogship. The
// guest must be reachable over SSH with a verified host key, by a user that
// can connect to PostgreSQL (peer authentication, a password or a passfile).
//
// # Packages
//
// The library is a set of contracts with real default implementations:
//
//	walbackup             Job: composes the contracts, runs parent and child sessions
//	session               Session records and Store, the configuration database
//	  session/memory      in process
//	  session/postgres    in PostgreSQL, shared by several processes
//	  session/sessiontest conformance suite for any Store
//	hypervisor            machines, consistent snapshots, image export and restore
//	  hypervisor/qemu     QEMU/KVM through QMP
//	  hypervisor/physical no hypervisor: the image is the cluster's files
//	guest                 deploying the runtime into a guest OS, and the runtime's API
//	  guest/ssh           OpenSSH guests
//	  guest/local         PostgreSQL on this host
//	  guest/runtime       the runtime component itself
//	repository            named immutable objects, the on-disk format
//	  repository/memory   in process
//	  repository/fs, repository/sftp, repository/s3
//	metrics               a Prometheus collector on the jobs' observers
//	wal                   LSNs and WAL file names
//	clock                 the injected time source
//	cmd/pglogship         the operator command: run, info, sessions, check,
//	                      verify, restore, drill, expire (docs/cli.md)
//	cmd/pglogship-runtime the runtime as a binary of its own, for SSH guests
//
// Every interface has a conformance suite or a fake for tests (the *test
// packages), and every timer goes through the Clock in a Config, so the
// whole lifecycle can be tested in virtual time.
//
// Every package above exists; README.md says what each one does.
//
// # Operators
//
// Programs embed the library; operators use the pglogship command
// (cmd/pglogship, docs/cli.md): `pglogship run` runs the jobs of one
// configuration file as a service with Prometheus metrics, and info,
// sessions, check, verify, restore, drill and expire inspect and use what
// they keep. `make demo` runs examples/quickstart on a throw-away
// PostgreSQL, then `pglogship info` on the configuration it wrote, which
// prints the restorable interval.
package pglogship
