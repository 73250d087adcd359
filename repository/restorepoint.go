package repository

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	if len(b) > MaxManifest {
		return fmt.Errorf("commit restore point %s: %w: manifest of %d bytes, at most %d", m.ID, ErrTooLarge, len(b), MaxManifest)
	}
	if err := repo.Put(ctx, inst.ManifestName(m.ID), bytes.NewReader(b)); err != nil {
		if errors.Is(err, ErrConflict) {
			if g, ok := repo.(Getter); ok && isAbandoned(ctx, g, inst, m.ID) {
				err = ErrAbandoned
			}
		}
		return fmt.Errorf("commit restore point %s: %w", m.ID, err)
	}
	return nil
}

// ErrAbandoned: the restore point never committed and its manifest name
// holds a tombstone: an expiry removed its objects as garbage (its writer
// crashed, or lost its lease and was paused past another process's run),
// so it can never commit.
var ErrAbandoned = errors.New("restore point abandoned: its objects were removed as garbage")

// tombstone is what AbandonRestorePoint stores at a manifest's name. It is
// the same bytes for the same restore point, so a repeated abandon is an
// identical Put.
type tombstone struct {
	Abandoned string `json:"abandoned"` // the restore point's id
	Note      string `json:"note"`
}

const tombstoneNote = "never committed; its objects were removed as garbage, and this name stays taken so it never commits"

// maxTombstone bounds what is read as a tombstone; real ones are tiny.
const maxTombstone = 4096

// AbandonRestorePoint claims the manifest name of the restore point id,
// which has not committed, with a tombstone, before its objects are
// removed: Put never overwrites, so of a late WriteManifest (a writer
// paused past its lease) and the tombstone exactly one wins, on every
// Repository. ErrCommitted when the manifest won: the restore point is
// committed and its objects must stay. Idempotent.
func AbandonRestorePoint(ctx context.Context, repo interface {
	Putter
	Getter
}, inst Instance, id string) error {
	b, err := json.Marshal(tombstone{Abandoned: id, Note: tombstoneNote})
	if err != nil {
		return err
	}
	err = repo.Put(ctx, inst.ManifestName(id), bytes.NewReader(b))
	if errors.Is(err, ErrConflict) && !isAbandoned(ctx, repo, inst, id) {
		return fmt.Errorf("abandon restore point %s: %w", id, ErrCommitted)
	}
	if err != nil {
		return fmt.Errorf("abandon restore point %s: %w", id, err)
	}
	return nil
}

// ErrCommitted: AbandonRestorePoint found the restore point committed.
var ErrCommitted = errors.New("restore point committed")

// isAbandoned tells whether the manifest name of id holds a tombstone.
func isAbandoned(ctx context.Context, repo Getter, inst Instance, id string) bool {
	rc, err := repo.Get(ctx, inst.ManifestName(id), 0, -1)
	if err != nil {
		return false
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxTombstone+1))
	return err == nil && tombstoneOf(b) != ""
}

// tombstoneOf returns the id a tombstone abandons, or "" for anything else.
func tombstoneOf(b []byte) string {
	var t tombstone
	if len(b) > maxTombstone || json.Unmarshal(b, &t) != nil {
		return ""
	}
	return t.Abandoned
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
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("read restore point %s: %w", id, err)
	}
	if len(b) > MaxManifest {
		return nil, fmt.Errorf("%w: restore point %s: %w: manifest over %d bytes", ErrBadManifest, id, ErrTooLarge, MaxManifest)
	}
	if tombstoneOf(b) != "" {
		return nil, fmt.Errorf("restore point %s: %w", id, ErrAbandoned)
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

// MaxManifest bounds a manifest read into memory; WriteManifest refuses a
// larger one.
const MaxManifest = 16 << 20

// RestorePointIDs lists the restore points of inst whose manifest name
// holds something, oldest first: the committed ones, and abandoned ones
// (ReadManifest gives ErrAbandoned). Objects of a restore point that never
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
// inst, oldest first; abandoned ones are left out.
func RestorePoints(ctx context.Context, repo ListGetter, inst Instance, auth Authenticator) ([]*Manifest, error) {
	ids, err := RestorePointIDs(ctx, repo, inst)
	if err != nil {
		return nil, err
	}
	out := make([]*Manifest, 0, len(ids))
	for _, id := range ids {
		m, err := ReadManifest(ctx, repo, inst, id, auth)
		if errors.Is(err, ErrAbandoned) {
			continue
		}
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
