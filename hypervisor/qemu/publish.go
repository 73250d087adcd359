package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pglogship/pglogship/hypervisor"
)

var _ hypervisor.Publisher = (*Hypervisor)(nil)

// OverlayName is the disk Publish returns, in its directory.
const OverlayName = "overlay.qcow2"

// Publish implements hypervisor.Publisher: dir gets the chain's qcow2
// files as Restore fetches and verifies them, each backed by the one
// before and made read-only, and OverlayName, a qcow2 overlay on the
// newest, which a VM boots from. The VM's writes go to the overlay only.
// Nothing is converted into one image, which is what a restore spends
// most of its time on.
func (h *Hypervisor) Publish(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, dir string, progress func(hypervisor.Progress)) (string, error) {
	if progress == nil {
		progress = func(hypervisor.Progress) {}
	}
	disk, err := h.publish(ctx, chain, src, dir, progress)
	if err != nil {
		return "", fmt.Errorf("publish to %s: %w", dir, err)
	}
	return disk, nil
}

func (h *Hypervisor) publish(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, dir string, progress func(hypervisor.Progress)) (string, error) {
	if err := h.checkRestorable(chain); err != nil {
		return "", err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(dir)
		}
	}()
	top, err := h.fetchChain(ctx, chain, src, dir, progress)
	if err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.qcow2"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if err := os.Chmod(f, 0o400); err != nil { // the backup's: only the overlay is written
			return "", err
		}
	}
	overlay := filepath.Join(dir, OverlayName)
	if err := h.qemuImg(ctx, "create", "-f", FormatQcow2, "-F", FormatQcow2, "-b", top, overlay); err != nil {
		return "", err
	}
	if err := syncFile(overlay); err != nil {
		return "", err
	}
	done = true
	return overlay, nil
}
