package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// Errors of direct shipping.
var (
	// ErrObjectExists: the repository already holds the object a bundle
	// was sent to (an earlier send whose answer was lost, or another
	// writer); the host compares what is there.
	ErrObjectExists = errors.New("the repository already holds the object")
	// ErrUploadDenied: the store refused the authorisation (expired, or
	// not for this request).
	ErrUploadDenied = errors.New("the store refused the upload's authorisation")
	// ErrUnreachable: the guest cannot reach the repository (no route, no
	// answer, or an answer that is not the store's).
	ErrUnreachable = errors.New("the guest cannot reach the repository")
)

// DirectShipper is implemented by runtimes that bundle WAL in the guest
// and send the bundle to the repository themselves, so the WAL does not
// pass through the host (check with a type assertion). The host stays in
// control: it names each object, authorises each send, and verifies what
// the repository stored before it removes the WAL from the guest.
type DirectShipper interface {
	// StageBundle bundles the named files of the temporary folder into a
	// file in the guest, as the object req.Object: each segment checked
	// against the cluster, summarized and compressed once. Nothing leaves
	// the guest. Staging an object again replaces its staged file.
	StageBundle(ctx context.Context, req StageRequest) (Staged, error)
	// SendBundle sends a staged bundle to the repository. Errors match
	// ErrObjectExists, ErrUploadDenied or ErrUnreachable where they can.
	SendBundle(ctx context.Context, object string, to Destination) error
	// DropBundle removes a staged bundle. Idempotent.
	DropBundle(ctx context.Context, object string) error
	// ProbeDestination tells whether the guest reaches the repository
	// there: nil, or an error matching ErrUnreachable or ErrUploadDenied.
	ProbeDestination(ctx context.Context, to Destination) error
}

// BundleStreamer is implemented by runtimes that bundle WAL in the guest
// and stream the bundle's bytes to the host, which stores it: the host
// path of the same pipeline as direct shipping, so the host neither
// decompresses nor parses WAL (check with a type assertion).
type BundleStreamer interface {
	// StreamBundle bundles the named files as StageBundle does and hands
	// the bundle's bytes to fn as they are made; it returns what the
	// bundle holds once fn has read them all. An error from fn stops the
	// bundle and is returned as is.
	StreamBundle(ctx context.Context, req StageRequest, fn func(io.Reader) error) (Staged, error)
}

// StageRequest is what StageBundle bundles.
type StageRequest struct {
	Object  string    `json:"object"`  // the repository object the bundle will be, bound into it
	Names   []string  `json:"names"`   // files of the temporary folder, in WAL order
	Created time.Time `json:"created"` // recorded in the bundle, for retention by age
	// Raw stages the one named timeline history file as it is, not a
	// bundle: history files are stored as objects of their own.
	Raw bool `json:"raw,omitempty"`
	// Checksum is the algorithm of Staged.Sum: SHA-256 (the default) where
	// the store checks it (S3) and for a history file, XXH3 where only
	// the host reads the object back.
	Checksum checksum.Algorithm `json:"checksum,omitempty"`
}

// Staged is a bundle ready in the guest.
type Staged struct {
	Object   string           `json:"object"`
	Size     int64            `json:"size"` // of the bundle
	Sum      checksum.Sum     `json:"sum"`  // of the bundle's bytes, as the request asked
	Files    []BundleFile     `json:"files"`
	Unknown  []UnknownSummary `json:"unknown,omitempty"`
	RawBytes int64            `json:"raw_bytes"`
}

// BundleFile is one file in a bundle: its size as PostgreSQL wrote it
// and the checksum of that content, in the bundle's algorithm.
type BundleFile struct {
	Name    string       `json:"name"`
	RawSize int64        `json:"raw_size"`
	Sum     checksum.Sum `json:"sum"`
}

// UnknownSummary is a bundled segment whose WAL summary covers only its
// records before From, because the reader could not read on from there.
type UnknownSummary struct {
	Segment string  `json:"segment"`
	From    wal.LSN `json:"from,omitempty"` // 0: the whole segment
	Reason  string  `json:"reason"`
}

// Destination is where SendBundle sends: one HTTP request the repository
// authorised (URL set), or a folder where the guest sees the repository's
// root itself (Dir set: a file system repository mounted in the guest).
type Destination struct {
	Method string            `json:"method,omitempty"`
	URL    string            `json:"url,omitempty"`
	Header map[string]string `json:"header,omitempty"`
	// CAPEM is the PEM of the certificate authorities to trust for the
	// store's TLS; empty means the guest's system roots.
	CAPEM string `json:"ca_pem,omitempty"`
	// ProbeStatus is the HTTP status a probe expects.
	ProbeStatus int `json:"probe_status,omitempty"`

	Dir string `json:"dir,omitempty"`
	// SFTP: the guest's own account on the repository's SFTP server.
	SFTP *SFTPAccess `json:"sftp,omitempty"`

	// Via is the log shipping server the guest reaches the store (URL or
	// SFTP) through; nil: the guest connects itself.
	Via *ShippingServer `json:"via,omitempty"`
}

// ShippingServer is a log shipping server: an SSH server that the guest
// logs into with a key of its own and that connects on to the store for
// it (SSH TCP forwarding), for guests that cannot reach the store
// themselves. The WAL passes through it, not through the host, and it
// holds no credential: what it relays is authorised per object as for a
// guest that connects itself. Its host key is always verified.
type ShippingServer struct {
	Addr       string `json:"addr"`        // host:port of the SSH server, as the guest reaches it
	User       string `json:"user"`        // the guest's account there
	KeyFile    string `json:"key_file"`    // a private key file in the guest, readable by the runtime
	KnownHosts string `json:"known_hosts"` // the server's known_hosts line(s)
}

// String names the server for logs.
func (s ShippingServer) String() string { return fmt.Sprintf("ssh://%s@%s", s.User, s.Addr) }

// Validate says what is missing or wrong in s.
func (s ShippingServer) Validate() error {
	switch {
	case s.Addr == "" || s.User == "":
		return errors.New("log shipping server: address and user are required")
	case !filepath.IsAbs(s.KeyFile):
		return fmt.Errorf("log shipping server %s: key file %q must be an absolute path in the guest", s, s.KeyFile)
	case strings.TrimSpace(s.KnownHosts) == "":
		return fmt.Errorf("log shipping server %s: its known_hosts line is required (host keys are always verified)", s)
	}
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return fmt.Errorf("log shipping server: address %q must be host:port", s.Addr)
	}
	return nil
}

// SFTPAccess is a guest's own access to an SFTP repository: a key the
// guest holds (never one of the host's), and the server's host key, which
// is always verified.
type SFTPAccess struct {
	Addr       string `json:"addr"`        // host:port of the SSH server, as the guest reaches it
	User       string `json:"user"`        // the guest's account there
	KeyFile    string `json:"key_file"`    // a private key file in the guest, readable by the runtime
	KnownHosts string `json:"known_hosts"` // the server's known_hosts line(s)
	Root       string `json:"root"`        // the repository's root on the server
}

// String describes the destination without an authorisation's signature.
func (d Destination) String() string {
	if d.Via != nil {
		e := d
		e.Via = nil
		return e.String() + " via " + d.Via.String()
	}
	if d.Dir != "" {
		return "folder " + d.Dir
	}
	if d.SFTP != nil {
		return fmt.Sprintf("sftp://%s@%s%s", d.SFTP.User, d.SFTP.Addr, d.SFTP.Root)
	}
	u := d.URL
	for i := 0; i < len(u); i++ {
		if u[i] == '?' {
			u = u[:i] + "?[redacted]"
			break
		}
	}
	return fmt.Sprintf("%s %s", d.Method, u)
}

// GoString is String, so %#v does not print the signature either.
func (d Destination) GoString() string { return d.String() }
