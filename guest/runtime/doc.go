// Package runtime is the guest side of pglogship: the non-persistent
// component a child session deploys into the guest OS. It scans the
// PostgreSQL instance, configures WAL archiving into a temporary folder,
// and hands completed WAL to the host. For file-level images it also lists
// and streams the cluster's own files (ListDataFiles), opening each only
// inside the data directory or a pg_tblspc/<oid> tablespace.
//
// What survives between sessions is only the archive_command (see
// ArchiveCommand): a one-line shell command that needs nothing but what the
// guest already has, so PostgreSQL keeps archiving while no runtime runs.
package runtime
