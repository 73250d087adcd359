package repository

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Component turns a free-form name (a job or machine name) into one valid
// name component: a readable slug plus 8 hex digits of the SHA-256 of the
// exact name, so two names that slug alike never share a folder.
//
//	Component("Daily DB Job") == "daily-db-job-" + hex(sha256("Daily DB Job"))[:8]
func Component(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if b.Len() >= 48 {
			break
		}
		switch {
		case 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	slug := strings.TrimRight(b.String(), "-")
	sum := sha256.Sum256([]byte(name))
	if slug == "" {
		return "x-" + hex.EncodeToString(sum[:4])
	}
	return slug + "-" + hex.EncodeToString(sum[:4])
}

// Instance locates one PostgreSQL cluster in the repository. Everything of a
// cluster lives under its Prefix, keyed by its system identifier, so WAL of
// two clusters (even of one machine, after a re-initdb) never mixes.
type Instance struct {
	Job      string // the parent job's name
	Machine  string // the machine id
	SystemID uint64 // pg_control_system().system_identifier
}

// Prefix is "jobs/<job>/<machine>/<system id>".
func (i Instance) Prefix() string {
	return "jobs/" + Component(i.Job) + "/" + Component(i.Machine) + "/" + strconv.FormatUint(i.SystemID, 10)
}

// RestorePoint is the folder of one restore point's objects.
func (i Instance) RestorePoint(id string) string { return i.Prefix() + "/restorepoints/" + id }

// SharedImage is the folder of an image taken once for all instances of
// the machine (Manifest.SharedImage), named by the id of the restore
// points that use it: "jobs/<job>/<machine>/images/<id>". It is not under
// any instance's prefix, since every instance's chain may use it.
func (i Instance) SharedImage(id string) string { return SharedImages(i.Job, i.Machine) + id }

// SharedImages is the folder of a machine's shared images, with a
// trailing slash.
func SharedImages(job, machine string) string {
	return "jobs/" + Component(job) + "/" + Component(machine) + "/images/"
}

// ImagePrefix is where the image objects of restore point m are.
func (i Instance) ImagePrefix(m *Manifest) string {
	if m.SharedImage {
		return i.SharedImage(m.ID)
	}
	return i.RestorePoint(m.ID)
}

// ManifestName is the restore point's manifest; writing it commits the
// restore point.
func (i Instance) ManifestName(id string) string { return i.RestorePoint(id) + "/manifest.json" }

// WALFolder is where the bundles of one timeline live.
func (i Instance) WALFolder(timeline uint32) string {
	return fmt.Sprintf("%s/wal/%08X/", i.Prefix(), timeline)
}

// HistoryName is where a timeline history file is stored, as its own object.
func (i Instance) HistoryName(name string) string { return i.Prefix() + "/wal/history/" + name }

// ConflictName is where a WAL file is kept aside when the repository holds
// another content under its name (a split brain): a bundle of that one file,
// named after the file and the first 8 bytes of its checksum (XXH3, as
// the guest summed it). Recovery never reads it; an operator does.
func (i Instance) ConflictName(name string, sum [32]byte) string {
	return i.Prefix() + "/wal/conflicts/" + name + "_" + hex.EncodeToString(sum[:8]) + ".bundle"
}

// NewBundleName names a new bundle holding WAL files first..last (by name
// order) of one timeline. The suffix is random: the name must be known
// before the bundle is streamed, and bundle bytes are never the same twice
// (random ids and nonces), so a retried batch needs a name of its own; the
// copies then overlap, which readers accept (docs/repository-format.md 4.1).
func (i Instance) NewBundleName(timeline uint32, first, last string) string {
	var id [4]byte
	_, _ = rand.Read(id[:]) // never fails on supported platforms
	return i.WALFolder(timeline) + first + "_" + last + "_" + hex.EncodeToString(id[:]) + ".bundle"
}

// BundleRef is a bundle found by listing: its object and the range of WAL
// file names it holds.
type BundleRef struct {
	Object      Object
	First, Last string
}

// ParseBundleName reads a bundle object name made by NewBundleName.
func ParseBundleName(name string) (BundleRef, bool) {
	base := name[strings.LastIndex(name, "/")+1:]
	stem, ok := strings.CutSuffix(base, ".bundle")
	if !ok {
		return BundleRef{}, false
	}
	parts := strings.Split(stem, "_")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[0] > parts[1] || len(parts[2]) != 8 {
		return BundleRef{}, false
	}
	if _, err := hex.DecodeString(parts[2]); err != nil {
		return BundleRef{}, false
	}
	return BundleRef{Object: Object{Name: name}, First: parts[0], Last: parts[1]}, true
}

// Lister is the part of a repository that finds bundles.
type Lister interface {
	List(ctx context.Context, prefix string, fn func(Object) error) error
}

// Bundles lists the bundles of a timeline in order of their first file.
// Objects in the folder that are not bundles are ignored.
func Bundles(ctx context.Context, repo Lister, inst Instance, timeline uint32) ([]BundleRef, error) {
	var refs []BundleRef
	err := repo.List(ctx, inst.WALFolder(timeline), func(o Object) error {
		if ref, ok := ParseBundleName(o.Name); ok {
			ref.Object = o
			refs = append(refs, ref)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list bundles of timeline %d: %w", timeline, err)
	}
	sort.SliceStable(refs, func(i, j int) bool { return refs[i].First < refs[j].First })
	return refs, nil
}

// Covering returns the bundles whose name range includes file, oldest first.
// More than one is possible (a batch retried after a crash ships a file
// again); readers then check that their copies agree.
func Covering(refs []BundleRef, file string) []BundleRef {
	var out []BundleRef
	for _, r := range refs {
		if r.First <= file && file <= r.Last {
			out = append(out, r)
		}
	}
	return out
}
