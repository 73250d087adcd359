// Package qemu is a hypervisor.Hypervisor for QEMU/KVM virtual machines,
// driven through each VM's QMP monitor socket (see package qmp), with
// qemu-img for local image files. QEMU runs on this host and shares
// Config.WorkDir with it.
//
// # Snapshots
//
// Snapshot creates a local qcow2 target in WorkDir, attaches it
// (blockdev-add), optionally freezes the guest's file systems through the
// QEMU guest agent, and runs one QMP transaction that fixes the point in
// time: it adds a new persistent dirty bitmap to the disk's qcow2 node and
// starts a blockdev-backup job into the target. Copy-before-write makes the
// job copy the disk as it was at that instant while the guest keeps
// writing, so the guest is thawed and Snapshot returns as soon as the job
// has started.
//
// A full image is a sync=full backup. An incremental image (SnapshotOptions
// Base) is a sync=bitmap backup of the bitmap that the base image added,
// with bitmap-mode=never: the base's bitmap keeps counting until the new
// image is exported, so a failed or abandoned incremental costs nothing and
// the next attempt from the same base is still complete. Each image names
// its own bitmap (Image.Meta[MetaBitmap], a fresh random name), so a
// bitmap that exists in QEMU always tracks the changes since exactly that
// image. When the base's bitmap is gone (deleted, or left inconsistent by
// a QEMU crash), belongs to another disk, or the disk was resized, Snapshot
// takes a full image instead and Image.Full says so. After an export
// succeeds, the bitmaps of older images are removed: only the newest
// exported image of a machine can be a base.
//
// # Export and restore
//
// Export waits for the job, detaches the target (which flushes it), and
// streams the qcow2 file, compressed with zstd, into the repository as one
// object, Prefix + "/" + ObjectName, with the SHA-256 of the stored bytes.
// An incremental image's qcow2 holds only the clusters that changed; its
// backing file is set at restore time.
//
// With Config.Key the object is instead a bundle (repository/bundle),
// Prefix + "/" + SealedObjectName, holding the qcow2 file compressed,
// encrypted and authenticated in chunks and bound to its object name; a
// Hypervisor with a key restores sealed images only (a plain one could be
// forged), and one without a key cannot read them.
//
// Restore fetches each image of a chain, verifies its checksum (or, sealed,
// authenticates every chunk) while reading, decompresses it into a
// temporary folder in WorkDir, checks its qcow2 header (ErrUnsafeImage for
// a backing file, an external data file, encryption or anything else that
// would make qemu-img open a file the restore did not write), rebases each
// incremental onto the image before it (qemu-img rebase -u), and converts
// the top of the chain into a new standalone qcow2 file at the target path.
// qemu-img is always told the formats (-f, -F): it never probes a file from
// the repository.
package qemu
