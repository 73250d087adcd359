package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/qemu/qmp"
	"github.com/pglogship/pglogship/repository/bundle"
)

// pollInterval is how often a wait for a job asks QEMU for its progress;
// events usually end the wait sooner.
const pollInterval = time.Second

// progressStep is how many bytes an upload or download moves between
// progress calls.
const progressStep = 4 << 20

var _ hypervisor.Fixed = (*snapshot)(nil)

// snapshot is a backup job of one VM and what it holds: the job, its
// target node and file, and the new dirty bitmap.
type snapshot struct {
	h          *Hypervisor
	vm         VM
	taken      time.Time
	full       bool
	size       int64  // virtual size
	dirty      int64  // incremental: bytes the base's bitmap marked
	bitmap     string // added by this snapshot
	baseBitmap string // incremental: the base's bitmap the job reads
	basePrefix string
	job        string // QEMU job id
	target     string // node name of the target
	path       string // target file

	mu       sync.Mutex
	created  bool // the target file exists
	attached bool // the target node exists
	started  bool // the job exists (until dismissed)
	exported bool // Export returned an image
	tried    bool // Export was called
	released bool
}

// Taken implements hypervisor.Snapshot.
func (s *snapshot) Taken() time.Time { return s.taken }

// Fixed implements hypervisor.Fixed: copy-before-write keeps the image at
// the point in time of the transaction that started the backup job.
func (s *snapshot) Fixed() bool { return true }

// Export implements hypervisor.Snapshot: it waits for the backup job,
// then uploads the image as one zstd-compressed object. progress (may be
// nil) first reports the job's copy (bytes of the disk; Total is the
// job's total) and then the upload (bytes of the local qcow2 file read;
// Total is its size). Errors: the job's failure as QEMU reports it,
// ctx's error when it ends (the job goes on until Release), the
// repository's error. A second call fails. Export and Release of one
// snapshot are serialised: a Release waits for a running Export, so cancel
// its ctx first.
func (s *snapshot) Export(ctx context.Context, dst hypervisor.ObjectPutter, prefix string, progress func(hypervisor.Progress)) (hypervisor.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tried || s.released {
		return hypervisor.Image{}, fmt.Errorf("export %s: snapshot already exported or released", s.vm.ID)
	}
	s.tried = true
	if progress == nil {
		progress = func(hypervisor.Progress) {}
	}
	img, err := s.export(ctx, dst, prefix, progress)
	if err != nil {
		return hypervisor.Image{}, fmt.Errorf("export %s: %w", s.vm.ID, err)
	}
	s.exported = true
	return img, nil
}

func (s *snapshot) export(ctx context.Context, dst hypervisor.ObjectPutter, prefix string, progress func(hypervisor.Progress)) (hypervisor.Image, error) {
	c, err := qmp.Dial(ctx, s.vm.QMPSocket)
	if err != nil {
		return hypervisor.Image{}, err
	}
	defer c.Close()
	start := s.h.cfg.Clock.Now()
	if err := s.finishJob(ctx, c, progress); err != nil {
		return hypervisor.Image{}, err
	}
	copied := s.h.cfg.Clock.Now()
	if err := s.detach(ctx, c); err != nil {
		return hypervisor.Image{}, err
	}
	name := prefix + "/" + ObjectName
	if s.h.cfg.Key != nil {
		name = prefix + "/" + SealedObjectName
	}
	obj, err := upload(ctx, dst, name, s.path, s.h.cfg.Key, progress)
	if err != nil {
		return hypervisor.Image{}, err
	}
	s.h.cfg.Logger.Info("image exported", "vm", s.vm.ID, "object", obj.Name, "full", s.full,
		"stored_bytes", obj.Size, "dirty_bytes", s.dirty,
		"copy", copied.Sub(start), "upload", s.h.cfg.Clock.Since(copied))

	// This image is now the base for the next one; older bitmaps only
	// cost the guest's writes. A failure to remove them spoils nothing:
	// the next export tries again.
	if err := s.removeBitmaps(ctx, c, func(name string) bool { return name != s.bitmap }); err != nil {
		s.h.cfg.Logger.Warn("remove older dirty bitmaps", "vm", s.vm.ID, "err", err)
	}
	if err := os.Remove(s.path); err == nil {
		s.created = false
	}
	meta := map[string]string{
		MetaFormat:      FormatQcow2,
		MetaCompression: CompressionZstd,
		MetaNode:        s.vm.Node,
		MetaBitmap:      s.bitmap,
		MetaVirtualSize: strconv.FormatInt(s.size, 10),
	}
	if !s.full {
		meta[MetaDirtyBytes] = strconv.FormatInt(s.dirty, 10)
	}
	if s.h.cfg.Key != nil {
		meta[MetaSealed] = SealedBundle
	}
	return hypervisor.Image{
		Machine: s.vm.ID,
		Taken:   s.taken,
		Full:    s.full,
		Base:    s.basePrefix,
		Prefix:  prefix,
		Objects: []hypervisor.ImageObject{obj},
		Meta:    meta,
	}, nil
}

// Release implements hypervisor.Snapshot: it cancels the job if it still
// runs, detaches and deletes the target, and, unless Export succeeded,
// removes the bitmap the snapshot added (the base's bitmap stays, so the
// next incremental from the same base is complete). Then the machine can
// be snapshotted again. Idempotent; a failed Release (QEMU unreachable,
// ctx ended) keeps the machine busy and can be retried.
func (s *snapshot) Release(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return nil
	}
	if err := s.release(ctx, nil); err != nil {
		return fmt.Errorf("release snapshot of %s: %w", s.vm.ID, err)
	}
	return nil
}

// release undoes what the snapshot holds, on c or a new connection, and
// frees the machine.
func (s *snapshot) release(ctx context.Context, c *qmp.Client) error {
	if s.started || s.attached || !s.exported {
		if c == nil || c.Err() != nil {
			var err error
			if c, err = qmp.Dial(ctx, s.vm.QMPSocket); err != nil {
				return err
			}
			defer c.Close()
		}
		// An attached target may have a job even when the transaction's
		// call failed (ctx ended after QEMU ran it).
		if s.started || s.attached {
			if err := s.cancelJob(ctx, c); err != nil {
				return err
			}
		}
		if err := s.detach(ctx, c); err != nil {
			return err
		}
		if !s.exported {
			if err := s.removeBitmaps(ctx, c, func(name string) bool { return name == s.bitmap }); err != nil {
				return err
			}
		}
	}
	if s.created {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		s.created = false
	}
	s.released = true
	s.h.unhold(s.vm.ID)
	return nil
}

// jobInfo is the part of query-jobs this package reads.
type jobInfo struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Current int64  `json:"current-progress"`
	Total   int64  `json:"total-progress"`
	Error   string `json:"error"`
}

func (s *snapshot) queryJob(ctx context.Context, c *qmp.Client) (jobInfo, bool, error) {
	var jobs []jobInfo
	if err := c.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
		return jobInfo{}, false, err
	}
	for _, j := range jobs {
		if j.ID == s.job {
			return j, true, nil
		}
	}
	return jobInfo{}, false, nil
}

// waitJob waits until the job has concluded, on events and a poll as a
// backstop, reporting progress.
func (s *snapshot) waitJob(ctx context.Context, c *qmp.Client, progress func(hypervisor.Progress)) (jobInfo, error) {
	events := c.Subscribe() // before the first query, so no change is missed
	defer events.Close()
	tick := s.h.cfg.Clock.Ticker(pollInterval)
	defer tick.Stop()
	for {
		j, found, err := s.queryJob(ctx, c)
		switch {
		case err != nil:
			return jobInfo{}, err
		case !found:
			s.started = false
			return jobInfo{}, fmt.Errorf("backup job %s is gone (QEMU restarted?)", s.job)
		}
		progress(hypervisor.Progress{Done: j.Current, Total: j.Total})
		if j.Status == "concluded" {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return jobInfo{}, ctx.Err()
		case <-tick.C:
		case e, ok := <-events.C():
			if !ok {
				return jobInfo{}, fmt.Errorf("wait for backup job: %w", c.Err())
			}
			if e.Name != "JOB_STATUS_CHANGE" && e.Name != "BLOCK_JOB_COMPLETED" && e.Name != "BLOCK_JOB_ERROR" {
				continue
			}
		}
	}
}

// finishJob waits for the job to conclude and dismisses it; the job's
// failure is the error.
func (s *snapshot) finishJob(ctx context.Context, c *qmp.Client, progress func(hypervisor.Progress)) error {
	j, err := s.waitJob(ctx, c, progress)
	if err != nil {
		return err
	}
	if err := c.Execute(ctx, "job-dismiss", map[string]string{"id": s.job}, nil); err != nil {
		return err
	}
	s.started = false
	if j.Error != "" {
		return fmt.Errorf("backup job %s: %s", s.job, j.Error)
	}
	return nil
}

// cancelJob cancels the job if it runs, waits for it to end and
// dismisses it.
func (s *snapshot) cancelJob(ctx context.Context, c *qmp.Client) error {
	j, found, err := s.queryJob(ctx, c)
	if err != nil {
		return err
	}
	if !found {
		s.started = false
		return nil
	}
	if j.Status != "concluded" {
		if err := c.Execute(ctx, "job-cancel", map[string]string{"id": s.job}, nil); err != nil {
			// Refused when the job concluded meanwhile; that is fine.
			if j, found, qerr := s.queryJob(ctx, c); qerr != nil || found && j.Status != "concluded" {
				return err
			}
		}
	}
	if err := s.finishJob(ctx, c, func(hypervisor.Progress) {}); err != nil && s.started {
		return err
	}
	return nil // a canceled job reports an error; that is expected
}

// detach deletes the target node if it exists. Closing it flushes QEMU's
// qcow2 metadata into the file.
func (s *snapshot) detach(ctx context.Context, c *qmp.Client) error {
	if !s.attached {
		return nil
	}
	nodes, err := queryNodes(ctx, c)
	if err != nil {
		return err
	}
	if _, ok := nodes[s.target]; ok {
		if err := c.Execute(ctx, "blockdev-del", map[string]string{"node-name": s.target}, nil); err != nil {
			return err
		}
	}
	s.attached = false
	return nil
}

// removeBitmaps removes this package's bitmaps on the VM's node for which
// drop is true.
func (s *snapshot) removeBitmaps(ctx context.Context, c *qmp.Client, drop func(name string) bool) error {
	node, err := queryNode(ctx, c, s.vm.Node)
	if err != nil {
		return err
	}
	for _, bm := range node.DirtyBitmaps {
		if !strings.HasPrefix(bm.Name, bitmapPrefix) || !drop(bm.Name) {
			continue
		}
		if err := c.Execute(ctx, "block-dirty-bitmap-remove", map[string]string{"node": s.vm.Node, "name": bm.Name}, nil); err != nil {
			return err
		}
	}
	return nil
}

// upload streams the file at path, zstd-compressed, into dst under name
// and returns the stored object's size and SHA-256.
func upload(ctx context.Context, dst hypervisor.ObjectPutter, name, path string, key *bundle.Key, progress func(hypervisor.Progress)) (hypervisor.ImageObject, error) {
	f, err := os.Open(path)
	if err != nil {
		return hypervisor.ImageObject{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return hypervisor.ImageObject{}, err
	}
	src := &progressReader{r: f, total: fi.Size(), progress: progress}

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		var err error
		if key != nil {
			err = seal(pw, name, key, src)
		} else {
			err = compress(pw, src)
		}
		pw.CloseWithError(err) // nil: the reader sees EOF
		done <- err
	}()
	sum := sha256.New()
	counted := &countingReader{r: io.TeeReader(pr, sum)}
	perr := dst.Put(ctx, name, counted)
	pr.CloseWithError(errors.New("upload ended")) // unblocks the compressor if Put stopped early
	cerr := <-done
	switch {
	case perr != nil:
		return hypervisor.ImageObject{}, fmt.Errorf("put %s: %w", name, perr)
	case cerr != nil:
		return hypervisor.ImageObject{}, fmt.Errorf("compress %s: %w", path, cerr)
	}
	src.report()
	return hypervisor.ImageObject{Name: name, Size: counted.n, SHA256: hex.EncodeToString(sum.Sum(nil))}, nil
}

// compress writes src to w as one zstd stream.
func compress(w io.Writer, src io.Reader) error {
	enc, err := zstd.NewWriter(w)
	if err != nil {
		return err
	}
	_, err = enc.ReadFrom(src)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	return err
}

// seal writes src to w as a bundle sealed with key for the object name,
// holding one file, SealedFile: compressed, encrypted and authenticated in
// chunks, so a restore checks every byte before qemu-img reads it.
func seal(w io.Writer, name string, key *bundle.Key, src io.Reader) error {
	bw, err := bundle.NewWriter(w, name, key)
	if err != nil {
		return err
	}
	if _, err := bw.Add(SealedFile, bundle.Raw, src); err != nil {
		return err
	}
	_, err = bw.Close()
	return err
}

// progressReader reports how much was read every progressStep bytes.
type progressReader struct {
	r        io.Reader
	n, total int64
	last     int64
	progress func(hypervisor.Progress)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.count(n)
	return n, err
}

// count adds n bytes read, reporting every progressStep.
func (p *progressReader) count(n int) {
	p.n += int64(n)
	if p.n-p.last >= progressStep {
		p.report()
	}
}

func (p *progressReader) report() {
	p.last = p.n
	p.progress(hypervisor.Progress{Done: p.n, Total: p.total})
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
