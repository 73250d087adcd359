// Package hypervisor defines how a parent session takes image-level backups:
// a Hypervisor lists machines, takes a consistent point-in-time Snapshot of
// one, exports that image into the repository (whole, or only what changed
// since a previous image), and restores an image chain to a target.
//
// The parent session puts PostgreSQL into backup mode, calls Snapshot, ends
// backup mode as soon as Snapshot returns (the point in time is fixed), and
// only then exports: a long export never keeps PostgreSQL in backup mode.
//
// Implementations: hypervisor/qemu (QEMU/KVM through QMP, dirty bitmaps for
// incremental images) and hypervisor/physical (no hypervisor: the image is
// the cluster's files, read during Export, so there backup mode must last
// until Export returns). hypervisor/hypervisortest has a fake for unit tests
// of orchestration.
package hypervisor
