// Package hypervisor defines how a parent session takes image-level backups:
// a Hypervisor lists machines, takes a consistent point-in-time Snapshot of
// one, exports that image into the repository (whole, or only what changed
// since a previous image), and restores an image chain to a target.
//
// The parent session puts PostgreSQL into backup mode and calls Snapshot.
// When the snapshot is Fixed (its point in time is fixed when Snapshot
// returns) it ends backup mode at once and exports afterwards, so a long
// export never keeps PostgreSQL in backup mode; otherwise the image is read
// live during Export and backup mode lasts until Export returns.
//
// Implementations: hypervisor/qemu (QEMU/KVM through QMP, dirty bitmaps for
// incremental images; Fixed) and hypervisor/physical (no hypervisor: the
// image is the cluster's files, read during Export).
// hypervisor/hypervisortest has a fake for unit tests of orchestration.
package hypervisor
