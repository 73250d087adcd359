package repository

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pglogship/pglogship/wal"
)

// ManifestVersion is the manifest format this package writes.
const ManifestVersion = 1

// ErrBadManifest is returned (wrapped) when a manifest does not parse or
// breaks its rules.
var ErrBadManifest = errors.New("invalid restore point manifest")

// ErrManifestAuth: a manifest read with an Authenticator carries no MAC,
// or one that does not match: it was edited, moved from another restore
// point, or written by someone without the key. Restores trust a
// manifest's checksums, so it is refused.
var ErrManifestAuth = errors.New("restore point manifest not authenticated")

// Authenticator computes the MAC that authenticates a manifest's bytes
// as stored under an object name (bundle.Key implements it).
type Authenticator interface {
	MAC(object string, b []byte) []byte
}

// Manifest describes one restore point: the image of a machine taken with
// PostgreSQL in backup mode, and what recovery needs to start from it.
// Writing it, after every object it lists, commits the restore point.
type Manifest struct {
	Version  int    `json:"version"`
	ID       string `json:"id"`
	Job      string `json:"job"`
	Machine  string `json:"machine"`
	SystemID uint64 `json:"system_id,string"`
	// DataDir is where the instance's data directory was when the image
	// was taken (which of a machine's instances it is); empty in
	// manifests written before it was recorded.
	DataDir string `json:"data_dir,omitempty"`
	// ServerVersion is the instance's server_version_num when the image
	// was taken (150018 for 15.18), so a restore can refuse a machine of
	// another major release before it writes anything; 0 in manifests
	// written before it was recorded.
	ServerVersion int    `json:"server_version,omitempty"`
	Timeline      uint32 `json:"timeline"`
	// WALSegmentSize is the cluster's WAL segment size in bytes; 0 in a
	// manifest means the default, 16 MiB.
	WALSegmentSize int64     `json:"wal_segment_size,omitempty"`
	StartLSN       wal.LSN   `json:"start_lsn"`
	StopLSN        wal.LSN   `json:"stop_lsn"`
	StartTime      time.Time `json:"start_time"`
	StopTime       time.Time `json:"stop_time"`
	// BackupLabel and TablespaceMap are what pg_backup_stop returned; a
	// restore writes them into the data directory before starting.
	BackupLabel   string `json:"backup_label"`
	TablespaceMap string `json:"tablespace_map,omitempty"`
	// Full is false for an incremental image, which needs Base.
	Full bool   `json:"full"`
	Base string `json:"base,omitempty"` // id of the restore point this one builds on
	// SharedImage: the image is the machine's, taken once for all its
	// instances (each in backup mode) by a hypervisor that images whole
	// machines, and its objects are under Instance.SharedImage(ID), not
	// under the restore point's folder. Base is then a restore point with
	// a shared image too.
	SharedImage bool `json:"shared_image,omitempty"`
	// Objects are the image's objects, under the restore point's folder
	// (or the shared image's).
	Objects []ManifestObject `json:"objects"`
	// Meta is what the hypervisor needs for the next incremental image or a
	// restore. Never secrets.
	Meta map[string]string `json:"meta,omitempty"`
	// MAC authenticates the rest of the manifest and its object name
	// (hex), when the repository is written with a key; see
	// WriteManifest.
	MAC string `json:"mac,omitempty"`
}

// macOf is the MAC of m, without its MAC, stored as object.
func macOf(m *Manifest, object string, auth Authenticator) (string, error) {
	c := *m
	c.MAC = ""
	b, err := EncodeManifest(&c)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(auth.MAC(object, b)), nil
}

// SegmentSize is the manifest's WAL segment size, with the default for 0.
func (m *Manifest) SegmentSize() int64 {
	if m.WALSegmentSize == 0 {
		return 16 << 20
	}
	return m.WALSegmentSize
}

// ManifestObject is one image object and its checksum.
type ManifestObject struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Validate checks the manifest's rules.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, args...))
	}
	switch {
	case m.Version != ManifestVersion:
		return bad("version %d, want %d", m.Version, ManifestVersion)
	case ValidName(m.ID) != nil || strings.Contains(m.ID, "/") || len(m.ID) > 128:
		return bad("bad id %q", m.ID)
	case m.Job == "" || m.Machine == "":
		return bad("job and machine are required")
	case m.SystemID == 0:
		return bad("system id is required")
	case m.Timeline == 0:
		return bad("timeline is required")
	case m.ServerVersion != 0 && (m.ServerVersion < 90000 || m.ServerVersion >= 1000000):
		return bad("server version %d: a server_version_num", m.ServerVersion)
	case m.WALSegmentSize != 0 && !wal.ValidSegmentSize(m.WALSegmentSize):
		return bad("wal segment size %d: a power of two from 1 MiB to 1 GiB", m.WALSegmentSize)
	case m.StopLSN < m.StartLSN || m.StartLSN == 0:
		return bad("lsn range %s..%s", m.StartLSN, m.StopLSN)
	case m.StartTime.IsZero() || m.StopTime.Before(m.StartTime):
		return bad("time range %v..%v", m.StartTime, m.StopTime)
	case m.BackupLabel == "":
		return bad("backup_label is required")
	case m.Full == (m.Base != ""):
		return bad("a full image has no base; an incremental one needs one")
	case len(m.Objects) == 0:
		return bad("no image objects")
	}
	seen := map[string]bool{}
	for _, o := range m.Objects {
		sum, err := hex.DecodeString(o.SHA256)
		switch {
		case ValidName(o.Name) != nil || seen[o.Name]:
			return bad("bad or repeated object name %q", o.Name)
		case o.Size < 0:
			return bad("object %s: negative size", o.Name)
		case err != nil || len(sum) != 32:
			return bad("object %s: bad sha256", o.Name)
		}
		seen[o.Name] = true
	}
	return nil
}

// EncodeManifest validates m and returns its JSON form.
func EncodeManifest(m *Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.MarshalIndent(m, "", "  ")
}

// DecodeManifest parses and validates a manifest. Unknown fields are
// refused: they would mean a newer format this reader does not understand.
func DecodeManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the manifest", ErrBadManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
