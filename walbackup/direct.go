package walbackup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
)

// ShippingMode says which path a job's WAL takes to the repository.
type ShippingMode string

const (
	// ShipAuto ships directly whenever the guest reaches the repository,
	// checked at every session start and after a failed direct send, and
	// through the host otherwise.
	ShipAuto ShippingMode = "auto"
	// ShipDirect ships only directly: when the guest cannot reach the
	// repository, the WAL waits in the guest and the session warns.
	ShipDirect ShippingMode = "direct"
	// ShipHost ships through a log shipping server always: the one
	// Shipping.Server names when the guest reaches the repository through
	// it, else the host.
	ShipHost ShippingMode = "host"
)

// Defaults for Shipping.
const (
	// DefaultAuthorizationTTL is how long an upload authorisation handed
	// to a guest lives.
	DefaultAuthorizationTTL = 15 * time.Minute
	// DefaultDirectBundleBytes caps the raw WAL of one directly shipped
	// bundle, which is one upload and one staged file in the guest.
	DefaultDirectBundleBytes = 1 << 30
	// DefaultHostBundleBytes caps the raw WAL of one bundle shipped
	// through the host: a large backlog goes in several, so a failure
	// late in it ships again only the bundles not yet verified.
	DefaultHostBundleBytes = 1 << 30
)

// Shipping configures how WAL travels from the guests to the repository.
//
// Direct shipping: the runtime bundles the WAL in the guest (compressed,
// summarized) and sends the bundle to the repository itself. The host
// stays in control: it names every object and, for an S3-compatible
// store, hands the guest one authorisation per bundle (a presigned PUT
// of exactly that object, size-bound by the content's SHA-256 the store
// checks, only while the name is free, for AuthorizationTTL); a file
// system or SFTP repository is written with the guest's own access
// (Machine.RepositoryPath, Machine.RepositorySFTP). No credential of the
// host's enters the guest.
// The host then verifies what the store holds (size and the store's own
// checksum, or a full read-back; and the bundle's index) before the WAL
// leaves the guest. Timeline history files go the same way, each as an
// object of its own, read back by the host. With Config.Key set, bundles
// are sealed on the host, so the WAL goes through the host.
type Shipping struct {
	Mode ShippingMode // empty means ShipAuto
	// AuthorizationTTL is how long an upload authorisation lives, at most
	// an hour; 0 means DefaultAuthorizationTTL.
	AuthorizationTTL time.Duration
	// DirectBundleBytes caps the raw WAL per directly shipped bundle; 0
	// means DefaultDirectBundleBytes.
	DirectBundleBytes int64
	// HostBundleBytes caps the raw WAL per bundle shipped through the
	// host; 0 means DefaultHostBundleBytes.
	HostBundleBytes int64
	// Server names a log shipping server other than the host, for modes
	// auto (when the guest cannot reach the repository itself) and host:
	// the guest logs into it over SSH with a key of its own and the server
	// connects on to the repository, so the WAL passes through it and not
	// through the host. Everything else works as in direct shipping (the
	// host authorises each object and verifies it). The repository must be
	// reachable from the server at the address the guests are given (an
	// S3 store's guest endpoint, a machine's RepositorySFTP address), and
	// the server must allow TCP forwarding for the guest's account. When
	// the guest cannot reach the repository through it either, the WAL
	// ships through the host, and the session says so.
	Server *guest.ShippingServer
	// Compression is how the guest compresses WAL, on either path:
	// guest.CodecZstd (the default when empty; about 12x on WAL) or
	// guest.CodecS2 (about three times less CPU per GiB in the guest, for
	// about twice the stored bytes). Bundles of both kinds restore alike.
	Compression guest.Codec
}

func (s *Shipping) setDefaults() {
	if s.Mode == "" {
		s.Mode = ShipAuto
	}
	if s.Compression == "" {
		s.Compression = guest.CodecZstd
	}
	if s.AuthorizationTTL == 0 {
		s.AuthorizationTTL = DefaultAuthorizationTTL
	}
	if s.DirectBundleBytes == 0 {
		s.DirectBundleBytes = DefaultDirectBundleBytes
	}
	if s.HostBundleBytes == 0 {
		s.HostBundleBytes = DefaultHostBundleBytes
	}
}

func (s *Shipping) validate(c *Config) error {
	switch {
	case s.Mode != ShipAuto && s.Mode != ShipDirect && s.Mode != ShipHost:
		return fmt.Errorf("shipping mode %q: must be %q, %q or %q", s.Mode, ShipAuto, ShipDirect, ShipHost)
	case s.Compression != guest.CodecZstd && s.Compression != guest.CodecS2:
		return fmt.Errorf("shipping compression %q: must be %q or %q", s.Compression, guest.CodecZstd, guest.CodecS2)
	case s.AuthorizationTTL < 0 || s.AuthorizationTTL > time.Hour:
		return fmt.Errorf("shipping authorisation lifetime %s: must be at most an hour", s.AuthorizationTTL)
	case s.DirectBundleBytes < 0:
		return errors.New("direct bundle size cannot be negative")
	case s.HostBundleBytes < 0:
		return errors.New("host bundle size cannot be negative")
	case s.Server != nil && s.Mode == ShipDirect:
		return fmt.Errorf("shipping mode direct: the guest connects to the repository itself, so a log shipping server (%s) is never used; use mode auto or host with it", s.Server)
	case s.Server != nil && c.Key != nil:
		return fmt.Errorf("log shipping server %s: bundles are sealed with the key on the host, so with a key the WAL must go through the host", s.Server)
	}
	if s.Server != nil {
		if err := s.Server.Validate(); err != nil {
			return err
		}
	}
	if s.Mode != ShipDirect {
		return nil
	}
	if c.Key != nil {
		return errors.New("shipping mode direct: bundles are sealed with the key on the host, so with a key the WAL must go through it (use mode auto or host)")
	}
	if _, ok := c.Repository.(repository.DirectUploader); ok {
		return nil
	}
	for _, m := range c.Machines {
		if m.RepositoryPath == "" && m.RepositorySFTP == nil {
			return fmt.Errorf("shipping mode direct: the repository cannot authorise uploads (S3-compatible stores can), and machine %s has no RepositoryPath or RepositorySFTP, its own access to the repository", m.ID)
		}
	}
	return nil
}

// Direct is how ShipOnce ships through the guest's own connection to the
// repository (see Shipping).
type Direct struct {
	Guest guest.DirectShipper
	// Uploads authorises each upload and reports the store's checksum of
	// what it stored; nil when the guest writes into Dir.
	Uploads repository.DirectUploader
	Dir     string            // the repository's root as the guest sees it
	SFTP    *guest.SFTPAccess // the guest's own access to an SFTP repository
	// Via is the log shipping server the guest reaches the repository
	// through; nil: it connects itself.
	Via *guest.ShippingServer
	TTL time.Duration
	// MaxBytes caps the raw WAL per bundle.
	MaxBytes int64
	Clock    clock.Clock // bounds the clean-up after a failed send

	fence func(context.Context) error // the job's repository fence; nil: none
}

// cleanupTimeout bounds removing a staged bundle or an unverified object.
const cleanupTimeout = time.Minute

// checksum is the algorithm the guest sums a bundle's bytes with: SHA-256
// for a store that checks it as it stores (an authorised request carries
// it), otherwise XXH3, which only the host's read-back checks.
func (d *Direct) checksum() checksum.Algorithm {
	if d.Uploads != nil {
		return checksum.SHA256
	}
	return checksum.XXH3
}

// destination returns where the guest sends object (of size bytes with
// checksum sum): an authorised request, or its own folder.
func (d *Direct) destination(ctx context.Context, object string, size int64, sum checksum.Sum) (guest.Destination, error) {
	if d.fence != nil {
		if err := d.fence(ctx); err != nil {
			return guest.Destination{}, err
		}
	}
	if d.Uploads == nil {
		return guest.Destination{Dir: d.Dir, SFTP: d.SFTP, Via: d.Via}, nil
	}
	if sum.Algorithm != checksum.SHA256 {
		return guest.Destination{}, fmt.Errorf("authorise %s: the guest summed it with %v, the store checks SHA-256", object, sum.Algorithm)
	}
	a, err := d.Uploads.AuthorizePut(ctx, object, size, sum.Digest, d.TTL)
	if err != nil {
		return guest.Destination{}, err
	}
	to := destinationOf(a)
	to.Via = d.Via
	return to, nil
}

func destinationOf(a repository.Authorization) guest.Destination {
	return guest.Destination{Method: a.Method, URL: a.URL, Header: a.Header, CAPEM: a.CAPEM, ProbeStatus: a.ProbeStatus}
}

// probe tells whether the guest reaches the repository.
func (d *Direct) probe(ctx context.Context) error {
	to := guest.Destination{Dir: d.Dir, SFTP: d.SFTP}
	if d.Uploads != nil {
		a, err := d.Uploads.AuthorizeProbe(ctx, d.TTL)
		if err != nil {
			return err
		}
		to = destinationOf(a)
	}
	to.Via = d.Via
	return d.Guest.ProbeDestination(ctx, to)
}

// shipDirect ships one timeline's new files through the guest's own
// connection, in bundles of at most MaxBytes of raw WAL, each verified
// before the next. It returns the objects stored and verified, with what
// they hold; on error, those before it stay counted (their WAL is in the
// repository) and the rest waits in the guest.
func shipDirect(ctx context.Context, d *Direct, repo repository.Repository, inst repository.Instance, tli uint32,
	names []string, sizes map[string]int64, opts ShipOptions) ([]shippedBundle, error) {
	var out []shippedBundle
	for len(names) > 0 {
		n := nextBundle(names, sizes, d.MaxBytes)
		b, err := shipDirectBundle(ctx, d, repo, inst, tli, names[:n], sizes, opts)
		if err != nil {
			return out, err
		}
		out = append(out, b)
		names = names[n:]
	}
	return out, nil
}

// shipHistoryDirect has the guest send a timeline history file as its own
// object, as shipHistory stores it, and reads it back (a few hundred
// bytes) before it counts. The same name with other content is a split
// brain: ErrConflict.
func shipHistoryDirect(ctx context.Context, d *Direct, repo repository.Repository, inst repository.Instance, name string) (int64, error) {
	obj := inst.HistoryName(name)
	staged, err := d.Guest.StageBundle(ctx, guest.StageRequest{Object: obj, Names: []string{name}, Raw: true})
	if err != nil {
		return 0, fmt.Errorf("stage %s in the guest: %w", name, err)
	}
	defer func() {
		cctx, cancel := clock.WithTimeout(d.Clock, context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = d.Guest.DropBundle(cctx, obj)
	}()
	if len(staged.Files) != 1 || staged.Files[0].Name != name || staged.Files[0].RawSize != staged.Size ||
		staged.Files[0].Sum != staged.Sum || staged.Sum.Algorithm != checksum.SHA256 {
		return 0, fmt.Errorf("stage %s in the guest: it staged something else", name)
	}
	to, err := d.destination(ctx, obj, staged.Size, staged.Sum)
	if err != nil {
		return 0, fmt.Errorf("authorise %s: %w", obj, err)
	}
	sendErr := d.Guest.SendBundle(ctx, obj, to)
	if sendErr != nil && !errors.Is(sendErr, guest.ErrObjectExists) {
		return 0, fmt.Errorf("send %s: %w", obj, sendErr)
	}
	back, err := readHistoryObject(ctx, repo, obj, name, nil)
	switch {
	case err == nil && int64(len(back)) == staged.Size && checksum.Of(checksum.SHA256, back) == staged.Sum:
		return staged.Size, nil
	case err == nil && sendErr != nil:
		return 0, fmt.Errorf("store %s: %w", obj, repository.ErrConflict) // other lines under its name
	}
	return 0, fmt.Errorf("read back %s: %w", obj, errors.Join(err, ErrChecksum))
}

// shippedBundle is one bundle stored and verified.
type shippedBundle struct {
	object  string
	names   []string
	raw     int64
	stored  int64
	unknown []UnknownSummary
}

// shipDirectBundle stages one bundle in the guest, sends it, and verifies
// what the repository stored. A bundle that fails verification is
// deleted: nothing unverified stays to be read by a restore.
func shipDirectBundle(ctx context.Context, d *Direct, repo repository.Repository, inst repository.Instance, tli uint32,
	names []string, sizes map[string]int64, opts ShipOptions) (shippedBundle, error) {
	obj := inst.NewBundleName(tli, names[0], names[len(names)-1])
	staged, err := d.Guest.StageBundle(ctx, guest.StageRequest{Object: obj, Names: names, Created: opts.Time, Checksum: d.checksum()})
	if err != nil {
		return shippedBundle{}, fmt.Errorf("bundle %s..%s in the guest: %w", names[0], names[len(names)-1], err)
	}
	defer func() {
		cctx, cancel := clock.WithTimeout(d.Clock, context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = d.Guest.DropBundle(cctx, obj)
	}()
	want, raw, err := checkStaged(obj, names, sizes, staged)
	if err != nil {
		return shippedBundle{}, err
	}
	to, err := d.destination(ctx, obj, staged.Size, staged.Sum)
	if err != nil {
		return shippedBundle{}, fmt.Errorf("authorise %s: %w", obj, err)
	}
	if err := d.Guest.SendBundle(ctx, obj, to); err != nil && !errors.Is(err, guest.ErrObjectExists) {
		return shippedBundle{}, fmt.Errorf("send %s from the guest: %w", obj, err)
	}
	// Sent, or already there (an earlier send's answer was lost): what the
	// store holds decides.
	if err := verifyDirect(ctx, d, repo, obj, staged, want); err != nil {
		if !errors.Is(err, repository.ErrNotFound) {
			cctx, cancel := clock.WithTimeout(d.Clock, context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if derr := repo.Delete(cctx, obj); derr != nil {
				err = errors.Join(err, fmt.Errorf("delete the unverified %s: %w", obj, derr))
			}
		}
		return shippedBundle{}, fmt.Errorf("verify %s: %w", obj, err)
	}
	return shippedBundle{object: obj, names: names, raw: raw, stored: staged.Size, unknown: staged.Unknown}, nil
}

// verifyDirect checks a directly sent bundle: its size and SHA-256 as the
// store computed them (S3), or its size and XXH3 as read back (a file
// system, SFTP), and its index
// against the files the guest staged.
func verifyDirect(ctx context.Context, d *Direct, repo repository.Repository, obj string, staged guest.Staged, want map[string]checksum.Sum) error {
	if d.Uploads == nil {
		return bundle.VerifyStored(ctx, repo, obj, staged.Size, nil, want, staged.Sum)
	}
	st, sum, err := d.Uploads.StoredChecksum(ctx, obj)
	if err != nil {
		return err
	}
	if st.Size != staged.Size || checksum.OfSHA256(sum) != staged.Sum {
		return fmt.Errorf("%w: the store holds %d bytes with SHA-256 %x, the guest staged %d bytes with %v",
			ErrChecksum, st.Size, sum, staged.Size, staged.Sum)
	}
	return bundle.VerifyIndex(ctx, repo, obj, st.Size, nil, want)
}

// probeFailure says why a probe failed, naming the guest once.
func probeFailure(err error) string {
	if errors.Is(err, guest.ErrUnreachable) {
		return err.Error()
	}
	return "the guest cannot reach the repository: " + err.Error()
}

// checkStaged checks that a bundle the guest built holds names, in order,
// with the sizes the guest listed, and returns each file's checksum and
// their raw bytes.
func checkStaged(obj string, names []string, sizes map[string]int64, staged guest.Staged) (map[string]checksum.Sum, int64, error) {
	if len(staged.Files) != len(names) || staged.Object != obj {
		return nil, 0, fmt.Errorf("bundle %s: the guest bundled %d of %d files", obj, len(staged.Files), len(names))
	}
	want := make(map[string]checksum.Sum, len(staged.Files))
	var raw int64
	for i, f := range staged.Files {
		if f.Name != names[i] || f.RawSize != sizes[f.Name] {
			return nil, 0, fmt.Errorf("bundle %s: the guest bundled %s (%d bytes) where %s was due", obj, f.Name, f.RawSize, names[i])
		}
		want[f.Name] = f.Sum
		raw += f.RawSize
	}
	return want, raw, nil
}
