package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository/bundle"
)

// maxWindow bounds the zstd window a restore accepts; the encoder's
// default window is 8 MiB, so a larger one means a damaged object.
const maxWindow = 64 << 20

// Restore implements hypervisor.Hypervisor: target is the path of a new,
// standalone qcow2 file (its directory must exist). chain is a full image
// and then its incrementals in order, each with Base naming the previous
// image's Prefix. Every object is checked against its size and SHA-256
// while it is read, and a mismatch gives ErrCorrupt. An existing target
// gives an error wrapping fs.ErrExist and is left as it was; a failed
// restore leaves nothing at target and no temporary files. Safe for
// concurrent use with other restores and with snapshots.
func (h *Hypervisor) Restore(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, target string, progress func(hypervisor.Progress)) error {
	if progress == nil {
		progress = func(hypervisor.Progress) {}
	}
	if err := h.restore(ctx, chain, src, target, progress); err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	return nil
}

func (h *Hypervisor) restore(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, target string, progress func(hypervisor.Progress)) error {
	if err := h.checkRestorable(chain); err != nil {
		return err
	}
	target, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	if err := notExist(target); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(h.cfg.WorkDir, "restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	top, err := h.fetchChain(ctx, chain, src, tmp, progress)
	if err != nil {
		return err
	}

	// Convert next to the target, then link it into place: a link never
	// replaces an existing file, and the target appears whole or not at all.
	partial := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".partial-"+randomToken())
	defer os.Remove(partial)
	if err := h.qemuImg(ctx, "convert", "-f", FormatQcow2, "-O", FormatQcow2, top, partial); err != nil {
		return err
	}
	if err := syncFile(partial); err != nil {
		return err
	}
	if err := os.Link(partial, target); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("target appeared meanwhile: %w", fs.ErrExist)
		}
		return err
	}
	return syncFile(filepath.Dir(target))
}

// fetchChain fetches and verifies chain (checked by the caller) into dir,
// one qcow2 file per image, each backed by the one before, and returns the
// newest.
func (h *Hypervisor) fetchChain(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, dir string, progress func(hypervisor.Progress)) (string, error) {
	var err error
	var total int64
	for _, img := range chain {
		total += img.Objects[0].Size
	}
	pr := &progressReader{total: total, progress: progress}
	var top string
	size := virtualSize(chain[0])
	for i, img := range chain {
		file := filepath.Join(dir, fmt.Sprintf("%03d.qcow2", i))
		if img.Meta[MetaSealed] == SealedBundle {
			err = h.fetchSealed(ctx, src, img.Objects[0], file, pr)
		} else {
			err = fetch(ctx, src, img.Objects[0], file, pr)
		}
		if err != nil {
			return "", err
		}
		// Checked (and authenticated, when sealed) above; now its header,
		// before qemu-img opens it.
		if err := checkQcow2(file, size); err != nil {
			return "", fmt.Errorf("image %s: %w", img.Prefix, err)
		}
		if top != "" {
			// The backing file is the one before it, written here; formats
			// are named, never probed.
			if err := h.qemuImg(ctx, "rebase", "-u", "-f", FormatQcow2, "-F", FormatQcow2, "-b", top, file); err != nil {
				return "", err
			}
		}
		top = file
	}
	pr.report()
	return top, nil
}

// checkRestorable checks chain (checkChain), and that its images are
// sealed exactly when this hypervisor has a key.
func (h *Hypervisor) checkRestorable(chain []hypervisor.Image) error {
	if err := checkChain(chain); err != nil {
		return err
	}
	for _, img := range chain {
		switch sealed := img.Meta[MetaSealed] == SealedBundle; {
		case sealed && h.cfg.Key == nil:
			return fmt.Errorf("image %s: %w", img.Prefix, bundle.ErrKeyRequired)
		case !sealed && h.cfg.Key != nil:
			return fmt.Errorf("image %s: %w: refused, it could be forged", img.Prefix, bundle.ErrNotEncrypted)
		}
	}
	return nil
}

// checkChain checks that chain is a full qcow2 image of this package and
// its incrementals, each on the one before.
func checkChain(chain []hypervisor.Image) error {
	if len(chain) == 0 {
		return errors.New("empty image chain")
	}
	if !chain[0].Full {
		return fmt.Errorf("chain starts with incremental image %s, not a full image", chain[0].Prefix)
	}
	for i, img := range chain {
		switch {
		case img.Meta[MetaFormat] != FormatQcow2 || img.Meta[MetaCompression] != CompressionZstd ||
			img.Meta[MetaSealed] != "" && img.Meta[MetaSealed] != SealedBundle:
			return fmt.Errorf("image %s is not a zstd-compressed qcow2 image of this hypervisor", img.Prefix)
		case virtualSize(img) <= 0:
			return fmt.Errorf("image %s records no disk size (%q)", img.Prefix, img.Meta[MetaVirtualSize])
		case len(img.Objects) != 1:
			return fmt.Errorf("image %s has %d objects, want 1", img.Prefix, len(img.Objects))
		case i == 0:
			continue
		case img.Full:
			return fmt.Errorf("image %s in the chain after %s is full, want incremental", img.Prefix, chain[i-1].Prefix)
		case img.Base != chain[i-1].Prefix:
			return fmt.Errorf("image %s builds on %q, not on the image before it, %s", img.Prefix, img.Base, chain[i-1].Prefix)
		case img.Meta[MetaVirtualSize] != chain[0].Meta[MetaVirtualSize]:
			return fmt.Errorf("image %s has another disk size than %s", img.Prefix, chain[0].Prefix)
		}
	}
	return nil
}

// virtualSize is the disk size img records, or -1.
func virtualSize(img hypervisor.Image) int64 {
	n, err := strconv.ParseInt(img.Meta[MetaVirtualSize], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// notExist returns an error wrapping fs.ErrExist when path exists.
func notExist(path string) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return fmt.Errorf("target: %w", fs.ErrExist)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	}
	return err
}

// fetch reads obj from src, checks its size and SHA-256, and writes it
// decompressed to the new file at path. pr counts the stored bytes read.
func fetch(ctx context.Context, src hypervisor.ObjectGetter, obj hypervisor.ImageObject, path string, pr *progressReader) error {
	rc, err := src.Get(ctx, obj.Name, 0, -1)
	if err != nil {
		return fmt.Errorf("get %s: %w", obj.Name, err)
	}
	defer rc.Close()
	sum := sha256.New()
	pr.r = io.TeeReader(rc, sum)
	start := pr.n
	// Concurrency 1 decodes synchronously: nothing reads pr after Copy.
	dec, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return err
	}
	defer dec.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, derr := io.Copy(f, dec)
	if err := f.Close(); derr == nil {
		derr = err
	}
	// Read what the decoder left, so the checksum covers the whole object.
	if _, err := io.Copy(io.Discard, pr); err != nil {
		return fmt.Errorf("read %s: %w", obj.Name, err)
	}
	if n, got := pr.n-start, hex.EncodeToString(sum.Sum(nil)); n != obj.Size || got != obj.SHA256 {
		return fmt.Errorf("%s: %w: read %d bytes with SHA-256 %s, want %d bytes with %s", obj.Name, ErrCorrupt, n, got, obj.Size, obj.SHA256)
	}
	if derr != nil {
		return fmt.Errorf("decompress %s: %w", obj.Name, derr)
	}
	return nil
}

// fetchSealed reads the sealed bundle obj from src and writes its qcow2
// file to the new file at path: every chunk is authenticated with the key,
// and the bundle opens only under the object name it was sealed for. pr
// counts the stored bytes read.
func (h *Hypervisor) fetchSealed(ctx context.Context, src hypervisor.ObjectGetter, obj hypervisor.ImageObject, path string, pr *progressReader) error {
	counted := &countingGetter{src: src, pr: pr}
	r, err := bundle.Open(ctx, counted, obj.Name, obj.Size, h.cfg.Key)
	if err != nil {
		return fmt.Errorf("open %s: %w", obj.Name, err)
	}
	if es := r.Entries(); len(es) != 1 || es[0].Name != SealedFile {
		return fmt.Errorf("%s: %w: the bundle does not hold exactly %s", obj.Name, ErrUnsafeImage, SealedFile)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, werr := r.WriteFile(ctx, SealedFile, f)
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("read %s: %w", obj.Name, werr)
	}
	return nil
}

// countingGetter counts the bytes read through it into pr.
type countingGetter struct {
	src hypervisor.ObjectGetter
	pr  *progressReader
}

func (g *countingGetter) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	rc, err := g.src.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	return countingReadCloser{rc, g.pr}, nil
}

type countingReadCloser struct {
	io.ReadCloser
	pr *progressReader
}

func (c countingReadCloser) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.pr.count(n)
	return n, err
}

// syncFile fsyncs a file or directory.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
