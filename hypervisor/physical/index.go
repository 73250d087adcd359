package physical

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
)

// IndexVersion is the index format this package writes and reads.
const IndexVersion = 1

// MaxIndex bounds an image's index as a reader holds it in memory (its
// JSON, about two million files): a larger one is repository.ErrTooLarge,
// refused when written and when read.
const MaxIndex = 512 << 20

// ErrBadIndex is returned (wrapped) when an index does not parse or breaks
// its rules.
var ErrBadIndex = errors.New("invalid image index")

// Index lists every directory and file of the cluster an image captured.
type Index struct {
	Version int    `json:"version"`
	Machine string `json:"machine"`
	Prefix  string `json:"prefix"`         // the image's own prefix
	Base    string `json:"base,omitempty"` // prefix of the image it builds on; empty when full
	// Files are sorted by Path in byte order, which puts each directory
	// before what it holds; the first is the data directory itself, ".".
	Files []IndexEntry `json:"files"`
}

// IndexEntry is one directory or regular file.
type IndexEntry struct {
	Path    string `json:"path"` // slash-separated, relative to the data directory
	Dir     bool   `json:"dir,omitempty"`
	Size    int64  `json:"size"`  // bytes; 0 for a directory
	ModTime int64  `json:"mtime"` // Unix nanoseconds
	Mode    uint32 `json:"mode"`  // Unix permission bits, 07777
	// SHA256 (hex) of the content and Image, the prefix of the image whose
	// FilesObject holds it; files only.
	SHA256 string `json:"sha256,omitempty"`
	Image  string `json:"image,omitempty"`
}

func encodeIndex(idx *Index) ([]byte, error) { return json.Marshal(idx) }

// decodeIndex parses an index and checks its rules (docs/repository-format.md
// section 6.2).
func decodeIndex(b []byte) (*Index, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var idx Index
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIndex, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the index", ErrBadIndex)
	}
	if err := idx.validate(); err != nil {
		return nil, err
	}
	return &idx, nil
}

func (idx *Index) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadIndex, fmt.Sprintf(format, args...))
	}
	switch {
	case idx.Version != IndexVersion:
		return bad("version %d, want %d", idx.Version, IndexVersion)
	case idx.Machine == "":
		return bad("machine is required")
	case repository.ValidName(idx.Prefix) != nil:
		return bad("bad prefix %q", idx.Prefix)
	case idx.Base != "" && (repository.ValidName(idx.Base) != nil || idx.Base == idx.Prefix):
		return bad("bad base %q", idx.Base)
	case len(idx.Files) == 0 || idx.Files[0].Path != "." || !idx.Files[0].Dir:
		return bad("the first entry must be the data directory, \".\"")
	}
	dirs := map[string]bool{".": true}
	for i, e := range idx.Files {
		if e.Mode > 0o7777 {
			return bad("%s: mode %o", e.Path, e.Mode)
		}
		if i == 0 {
			if e.Size != 0 || e.SHA256 != "" || e.Image != "" {
				return bad("the data directory has content")
			}
			continue
		}
		if err := guest.CheckDataPath(e.Path); err != nil {
			return bad("%v", err)
		}
		if e.Path <= idx.Files[i-1].Path {
			return bad("%s: not sorted or repeated", e.Path)
		}
		if !dirs[path.Dir(e.Path)] {
			return bad("%s: its directory is not listed", e.Path)
		}
		if e.Dir {
			if e.Size != 0 || e.SHA256 != "" || e.Image != "" {
				return bad("directory %s has content", e.Path)
			}
			dirs[e.Path] = true
			continue
		}
		if sum, err := hex.DecodeString(e.SHA256); err != nil || len(sum) != sha256.Size || hex.EncodeToString(sum) != e.SHA256 {
			return bad("%s: bad sha256", e.Path)
		}
		switch {
		case e.Size < 0:
			return bad("%s: size %d", e.Path, e.Size)
		case repository.ValidName(e.Image) != nil:
			return bad("%s: bad image %q", e.Path, e.Image)
		case idx.Base == "" && e.Image != idx.Prefix:
			return bad("%s: a full image holds every file itself", e.Path)
		}
	}
	return nil
}

// objectOf returns the ImageObject of img called name (FilesObject or
// IndexObject), whether Objects names it in full (<prefix>/<name>) or
// relative to the prefix.
func objectOf(img hypervisor.Image, name string) (hypervisor.ImageObject, bool) {
	for _, o := range img.Objects {
		if o.Name == img.Prefix+"/"+name || o.Name == name {
			return o, true
		}
	}
	return hypervisor.ImageObject{}, false
}

// isImage tells whether img was exported by this package.
func isImage(img hypervisor.Image) bool {
	_, files := objectOf(img, FilesObject)
	_, index := objectOf(img, IndexObject)
	return img.Meta[MetaFormat] == Format && files && index && img.Prefix != ""
}

// ReadIndex reads the index of img from src: the index object is checked
// against the SHA-256 and size img records for it, opened (with the
// configured key) and its rules checked, and it must name img's machine,
// prefix and base. Errors: hypervisor.ErrUnsupported for an image of
// another kind, ErrChecksum, ErrBadIndex, the bundle's errors (ErrCorrupt,
// ErrWrongKey), or src's. Read-only; safe for concurrent use.
func (h *Hypervisor) ReadIndex(ctx context.Context, src hypervisor.ObjectGetter, img hypervisor.Image) (*Index, error) {
	if !isImage(img) {
		return nil, fmt.Errorf("read index of %s: not a file-level image: %w", img.Prefix, hypervisor.ErrUnsupported)
	}
	obj, _ := objectOf(img, IndexObject)
	name := img.Prefix + "/" + IndexObject
	switch {
	case obj.Size < 0:
		return nil, fmt.Errorf("read index %s: size %d out of range", name, obj.Size)
	case obj.Size > MaxIndex:
		return nil, fmt.Errorf("read index %s: %w: %d bytes, at most %d", name, repository.ErrTooLarge, obj.Size, MaxIndex)
	}
	rc, err := src.Get(ctx, name, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, obj.Size+1))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	if sum := sha256.Sum256(data); int64(len(data)) != obj.Size || hex.EncodeToString(sum[:]) != obj.SHA256 {
		return nil, fmt.Errorf("read index %s: %w: the object is not what the image recorded", name, ErrChecksum)
	}
	r, err := bundle.OpenBytes(ctx, data, name, h.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	b, err := r.ReadFile(ctx, IndexFile, MaxIndex)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	idx, err := decodeIndex(b)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	if idx.Machine != img.Machine || idx.Prefix != img.Prefix || idx.Base != img.Base {
		return nil, fmt.Errorf("read index %s: %w: it describes %s at %s (base %q), not %s at %s (base %q)", name, ErrBadIndex,
			idx.Machine, idx.Prefix, idx.Base, img.Machine, img.Prefix, img.Base)
	}
	return idx, nil
}
