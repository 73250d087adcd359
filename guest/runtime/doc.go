// Package runtime is the guest side of pglogship: the non-persistent
// component a child session deploys into the guest OS. It scans the
// PostgreSQL instance, configures WAL archiving into a temporary folder,
// and hands completed WAL to the host. For file-level images it also lists
// and streams the cluster's own files (ListDataFiles), opening each only
// inside the data directory or a pg_tblspc/<oid> tablespace. For a restore
// it starts PostgreSQL in archive recovery on a restored data directory
// (Runtime.Recover), answering restore_command with WAL the host fetches:
// restore_command runs this same program in fetch mode (FetchFile), which
// asks the runtime over a unix socket in a private spool folder inside
// pg_wal, where the next segments wait, fetched ahead.
//
// What survives between sessions is only the archive_command (see
// ArchiveCommand): a one-line shell command that needs nothing but what the
// guest already has, so PostgreSQL keeps archiving while no runtime runs.
package runtime
