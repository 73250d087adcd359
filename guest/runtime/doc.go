// Package runtime is the guest side of pglogship: the non-persistent
// component a child session deploys into the guest OS. It scans the
// PostgreSQL instance, configures WAL archiving into a temporary folder,
// and hands completed WAL to the host.
//
// What survives between sessions is only the archive_command (see
// ArchiveCommand): a one-line shell command that needs nothing but what the
// guest already has, so PostgreSQL keeps archiving while no runtime runs.
package runtime
