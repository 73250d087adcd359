package repository

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NewRestorePointID names a restore point taken at t: the UTC time first,
// so ids sort by time, then random hex so two never collide.
func NewRestorePointID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Putter is the part of a repository that stores objects.
type Putter interface {
	Put(ctx context.Context, name string, r io.Reader) error
}

// Getter is the part of a repository that reads objects.
type Getter interface {
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
}

// WriteManifest commits a restore point of inst: every object it lists
// must already be stored, because a manifest makes the restore point
// visible to restores (docs/repository-format.md). The manifest must
// belong to inst. With auth (the repository's key) the manifest carries a
// MAC over its content and object name, which ReadManifest checks.
func WriteManifest(ctx context.Context, repo Putter, inst Instance, m *Manifest, auth Authenticator) error {
	if m.Job != inst.Job || m.Machine != inst.Machine || m.SystemID != inst.SystemID {
		return fmt.Errorf("%w: restore point %s belongs to %s/%s/%d, not %s/%s/%d", ErrBadManifest, m.ID,
			m.Job, m.Machine, m.SystemID, inst.Job, inst.Machine, inst.SystemID)
	}
	m.MAC = ""
	if auth != nil {
		mac, err := macOf(m, inst.ManifestName(m.ID), auth)
		if err != nil {
			return err
		}
		m.MAC = mac
	}
	b, err := EncodeManifest(m)
	if err != nil {
		return err
	}
	if err := repo.Put(ctx, inst.ManifestName(m.ID), bytes.NewReader(b)); err != nil {
		return fmt.Errorf("commit restore point %s: %w", m.ID, err)
	}
	return nil
}

// ReadManifest reads and validates the manifest of restore point id. With
// auth, a manifest without a MAC or with one that does not match is
// ErrManifestAuth.
func ReadManifest(ctx context.Context, repo Getter, inst Instance, id string, auth Authenticator) (*Manifest, error) {
	rc, err := repo.Get(ctx, inst.ManifestName(id), 0, -1)
	if err != nil {
		return nil, fmt.Errorf("read restore point %s: %w", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("read restore point %s: %w", id, err)
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%w: restore point %s: manifest over %d bytes", ErrBadManifest, id, maxManifest)
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("restore point %s: %w", id, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("%w: restore point %s holds the manifest of %s", ErrBadManifest, id, m.ID)
	}
	if auth != nil {
		want, err := macOf(m, inst.ManifestName(id), auth)
		if err != nil {
			return nil, err
		}
		switch {
		case m.MAC == "":
			return nil, fmt.Errorf("%w: restore point %s: its manifest carries no MAC, and the repository has a key", ErrManifestAuth, id)
		case !hmac.Equal([]byte(m.MAC), []byte(want)):
			return nil, fmt.Errorf("%w: restore point %s: its manifest's MAC does not match (edited, moved, or written without the key)", ErrManifestAuth, id)
		}
	}
	return m, nil
}

// maxManifest bounds a manifest read into memory.
const maxManifest = 16 << 20

// RestorePointIDs lists the committed restore points of inst (those whose
// manifest is stored), oldest first. Objects of a restore point that never
// committed are not listed.
func RestorePointIDs(ctx context.Context, repo Lister, inst Instance) ([]string, error) {
	prefix := inst.RestorePoint("")
	var ids []string
	err := repo.List(ctx, prefix, func(o Object) error {
		id, rest, ok := strings.Cut(strings.TrimPrefix(o.Name, prefix), "/")
		if ok && rest == "manifest.json" {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list restore points: %w", err)
	}
	sort.Strings(ids)
	return ids, nil
}

// ListGetter lists and reads objects.
type ListGetter interface {
	Lister
	Getter
}

// RestorePoints reads the manifests of every committed restore point of
// inst, oldest first.
func RestorePoints(ctx context.Context, repo ListGetter, inst Instance, auth Authenticator) ([]*Manifest, error) {
	ids, err := RestorePointIDs(ctx, repo, inst)
	if err != nil {
		return nil, err
	}
	out := make([]*Manifest, 0, len(ids))
	for _, id := range ids {
		m, err := ReadManifest(ctx, repo, inst, id, auth)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Instances lists the clusters of a job's machine that the repository
// holds anything of (a machine has several when it was made again with
// initdb), by system identifier in ascending order.
func Instances(ctx context.Context, repo Lister, job, machine string) ([]Instance, error) {
	prefix := "jobs/" + Component(job) + "/" + Component(machine) + "/"
	seen := map[uint64]bool{}
	var out []Instance
	err := repo.List(ctx, prefix, func(o Object) error {
		first, _, _ := strings.Cut(strings.TrimPrefix(o.Name, prefix), "/")
		id, err := strconv.ParseUint(first, 10, 64)
		if err == nil && !seen[id] {
			seen[id] = true
			out = append(out, Instance{Job: job, Machine: machine, SystemID: id})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list clusters of %s: %w", machine, err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].SystemID < out[b].SystemID })
	return out, nil
}
