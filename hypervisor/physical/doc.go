// Package physical is a hypervisor.Hypervisor for machines no hypervisor
// reaches: the "image" of a machine is its PostgreSQL cluster's own files,
// the data directory and the tablespaces, streamed from the guest runtime
// (guest.DataFiles) into the repository.
//
// A Snapshot deploys a runtime into the machine's guest; Export lists the
// cluster's files and streams them, compressed in the guest, into one
// bundle object, then writes an index object listing every file and
// directory with its size, time, mode and SHA-256, and which image holds
// its content. Given a base image of the same machine (and a destination
// that can also be read), Export stores only the files whose size,
// modification time or SHA-256 (computed in the guest) changed; the rest
// point at the image that already holds them. Restore reads the newest
// index of a chain and writes every file, from whichever image holds it,
// into a new directory, checking every checksum. With Config.Key set, both
// objects of an image are encrypted (repository/bundle), and Restore needs
// the same key.
//
// Unlike a disk snapshot, Snapshot does not fix the point in time: the files
// are read during Export. The caller must hold PostgreSQL in backup mode
// (pg_backup_start) from before Snapshot until Export has returned, and keep
// the backup_label and tablespace_map pg_backup_stop returns with the image;
// PostgreSQL's WAL replay from the backup's start then repairs whatever
// changed while the files were read. Each tablespace is restored into a
// directory of its own outside the data directory (RestoreTablespaces says
// where) and pg_tblspc/<oid> becomes a link to it, as PostgreSQL requires;
// a restore must not write the tablespace_map back, which would point the
// links at the original locations.
//
// The format of the objects is specified in docs/repository-format.md,
// section 6.
package physical
