// Package s3 is a repository.Repository in a bucket of an S3-compatible
// object store (AWS S3, MinIO, and others that implement conditional
// writes), reached with github.com/minio/minio-go/v7.
//
// Each object is stored under the key Prefix + name. Every object carries
// the SHA-256 of its content as user metadata (x-amz-meta-pglogship-sha256),
// which is how a Put of identical content is recognised without writing.
//
// Commits are conditional writes: the request that makes an object visible
// (PutObject, or CompleteMultipartUpload) carries "If-None-Match: *", so the
// store refuses it with 412 Precondition Failed when the key exists, and
// checks and commits under one lock (MinIO takes the object's namespace
// lock for both; AWS S3 documents the same first-writer-wins rule). Of
// concurrent Puts to one name exactly one commits; the others see 412 and
// compare their checksum with the winner's. Nothing is ever overwritten.
//
// An object no larger than Config.PartSize is read into memory, hashed and
// sent in one PutObject that carries its checksum. A larger one streams,
// one part at a time, into a multipart upload under a staging key
// (Prefix + ".staging/<random>", a name no object can have, so it is never
// listed) while it is hashed; the checksum is known only at the end, and S3
// takes metadata only when an object is created, so the object is then
// committed by a server-side multipart copy of the staging object to its
// name, created with the checksum and completed with If-None-Match. The
// staging object is deleted afterwards. Memory stays at one part per Put
// whatever the object's size; the price of a large object is one copy
// inside the store, never a second upload.
//
// Durability: a PutObject or CompleteMultipartUpload that returns success
// means the store has made the object durable (AWS S3 stores it
// redundantly before answering; MinIO answers once the object's write
// quorum of drives has it). Put returns only after that answer.
//
// A crash in the middle of a Put can leave an incomplete multipart upload
// or a staging object; neither is ever listed or read. A bucket lifecycle
// rule that aborts incomplete multipart uploads and expires the
// ".staging/" keys after a day removes them; Sweep does the same on
// demand. (MinIO lists uploads in progress only by exact key, so there
// Sweep removes staging objects only; MinIO aborts stale uploads itself,
// after 24 hours by default.)
//
// The secret key is never logged nor put into errors; Config's String,
// GoString and LogValue leave it out.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/repository"
)

var _ repository.Repository = (*Repo)(nil)

// Part sizes. S3 takes at most 10,000 parts per upload, each at least
// 5 MiB (but the last) and at most 5 GiB.
const (
	// DefaultPartSize is Config.PartSize when it is zero: objects up to it
	// are written with one PutObject, larger ones in parts of this size.
	DefaultPartSize = 32 << 20
	// MinPartSize is the smallest part S3 accepts.
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part S3 accepts.
	MaxPartSize = 5 << 30
	// MaxParts is the most parts one upload may have, so the largest
	// object is MaxParts × PartSize.
	MaxParts = 10000
)

// StagingPrefix is the key folder, below Config.Prefix, that holds large
// objects while they are written. It starts with a dot, so no object name
// can fall in it.
const StagingPrefix = ".staging/"

// metaSHA256 is the user metadata key (x-amz-meta-pglogship-sha256) that
// holds the hex SHA-256 of an object's content.
const metaSHA256 = "pglogship-sha256"

const (
	// copyPartSize is the size of the server-side copy parts that commit a
	// large object (grown when needed to stay within MaxParts).
	copyPartSize = 1 << 30
	// cleanupTimeout bounds aborting an upload or deleting a staging
	// object after a Put failed or was canceled.
	cleanupTimeout = time.Minute
	// commitAttempts bounds retries of a commit whose target vanished
	// between the refusal and the comparison, or that the store asks to
	// retry (409 ConditionalRequestConflict).
	commitAttempts = 3
)

// ErrAccessDenied is returned (wrapped) when the store refuses the
// credentials or the request: a wrong access key or secret key, or a
// policy that does not allow it.
var ErrAccessDenied = errors.New("s3 access denied (check the access key, secret key and bucket policy)")

// ErrNoSuchBucket is returned (wrapped) when the bucket does not exist.
var ErrNoSuchBucket = errors.New("s3 bucket does not exist")

// Config configures New. SecretKey is never logged nor put into errors.
type Config struct {
	Endpoint  string // host or host:port of the S3 API, without a scheme; required
	Bucket    string // an existing bucket; required
	Prefix    string // key prefix, e.g. "pglogship/site1", so repositories can share a bucket; optional
	AccessKey string // required
	SecretKey string // required; never logged nor put into errors
	// Insecure speaks plain HTTP instead of HTTPS: only for a store on
	// loopback or a network you trust, as the keys and data travel in clear.
	Insecure bool
	Region   string // optional; found from the bucket when empty
	// PartSize is the unit of memory and upload: objects up to it go in
	// one PutObject, larger ones in parts of this size; 0 means
	// DefaultPartSize. Each Put holds one part in memory.
	PartSize int64
	// Transport carries the HTTP requests, e.g. one that trusts a private
	// CA; nil means minio-go's default.
	Transport http.RoundTripper
	// Clock bounds the cleanup after a failed Put; nil means clock.New().
	Clock clock.Clock
	// GuestEndpoint is host or host:port where guests reach the store
	// when they ship WAL directly (a QEMU guest on user networking sees
	// the host as 10.0.2.2); empty means Endpoint. Authorisations are
	// signed for it.
	GuestEndpoint string
	// GuestCAPEM is the PEM of the certificate authorities guests trust
	// for the store's TLS (a private CA); empty means their system roots.
	GuestCAPEM string
}

// String describes the configuration without the secret key.
func (c Config) String() string {
	return fmt.Sprintf("s3.Config{Endpoint:%q Bucket:%q Prefix:%q AccessKey:%q SecretKey:[redacted] Insecure:%t Region:%q PartSize:%d GuestEndpoint:%q}",
		c.Endpoint, c.Bucket, c.Prefix, c.AccessKey, c.Insecure, c.Region, c.PartSize, c.GuestEndpoint)
}

// GoString is String, so %#v does not print the secret key either.
func (c Config) GoString() string { return c.String() }

// LogValue logs the configuration without the secret key.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("endpoint", c.Endpoint), slog.String("bucket", c.Bucket),
		slog.String("prefix", c.Prefix), slog.String("access_key", c.AccessKey), slog.Bool("insecure", c.Insecure))
}

// Repo is a repository in an S3 bucket. Safe for concurrent use, also by
// several processes (and hosts) sharing the bucket and prefix.
type Repo struct {
	core     minio.Core
	bucket   string
	prefix   string
	partSize int64
	clk      clock.Clock
	bufs     sync.Pool // *[]byte of partSize
	presign  *minio.Client
	guestCA  string
}

// New checks cfg and prepares the client. It does not contact the store:
// Check does.
func New(cfg Config) (*Repo, error) {
	switch {
	case cfg.Endpoint == "" || cfg.Bucket == "":
		return nil, errors.New("open s3 repository: endpoint and bucket are required")
	case strings.Contains(cfg.Endpoint, "://") || strings.ContainsAny(cfg.Endpoint, "/@?#"):
		return nil, fmt.Errorf("open s3 repository: endpoint %q must be host or host:port (HTTPS unless Insecure)", cfg.Endpoint)
	case cfg.AccessKey == "" || cfg.SecretKey == "":
		return nil, errors.New("open s3 repository: access key and secret key are required")
	case strings.Contains(cfg.GuestEndpoint, "://") || strings.ContainsAny(cfg.GuestEndpoint, "/@?#"):
		return nil, fmt.Errorf("open s3 repository: guest endpoint %q must be host or host:port", cfg.GuestEndpoint)
	}
	prefix := strings.TrimSuffix(cfg.Prefix, "/")
	if prefix != "" {
		if err := repository.ValidName(prefix); err != nil {
			return nil, fmt.Errorf("open s3 repository: prefix: %w", err)
		}
		prefix += "/"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize || cfg.PartSize > MaxPartSize {
		return nil, fmt.Errorf("open s3 repository: part size %d must be from %d to %d bytes", cfg.PartSize, MinPartSize, MaxPartSize)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    !cfg.Insecure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("open s3 repository %s: %w", cfg.Endpoint, err)
	}
	presign, err := newPresigner(cfg)
	if err != nil {
		return nil, fmt.Errorf("open s3 repository %s: guest endpoint: %w", cfg.Endpoint, err)
	}
	r := &Repo{core: minio.Core{Client: client}, bucket: cfg.Bucket, prefix: prefix, partSize: cfg.PartSize, clk: cfg.Clock,
		presign: presign, guestCA: cfg.GuestCAPEM}
	r.bufs.New = func() any { b := make([]byte, r.partSize); return &b }
	return r, nil
}

// Check contacts the store and reports whether the bucket exists and the
// credentials are accepted: nil, or an error wrapping ErrNoSuchBucket or
// ErrAccessDenied.
func (r *Repo) Check(ctx context.Context) error {
	ok, err := r.core.BucketExists(ctx, r.bucket)
	if err != nil {
		return fmt.Errorf("check s3 bucket %s: %w", r.bucket, r.mapErr(err))
	}
	if !ok {
		return fmt.Errorf("check s3 bucket %s: %w", r.bucket, ErrNoSuchBucket)
	}
	return nil
}

func (r *Repo) key(name string) (string, error) {
	if err := repository.ValidName(name); err != nil {
		return "", err
	}
	return r.prefix + name, nil
}

// mapErr turns the store's errors into the repository's sentinels and this
// package's own; other errors are returned as they are.
func (r *Repo) mapErr(err error) error {
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey":
		return fmt.Errorf("%w: %s", repository.ErrNotFound, resp.Message)
	case "NoSuchBucket":
		return fmt.Errorf("%w: %s", ErrNoSuchBucket, r.bucket)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken":
		return fmt.Errorf("%w: %s: %s", ErrAccessDenied, resp.Code, resp.Message)
	}
	return err
}

func errCode(err error) string { return minio.ToErrorResponse(err).Code }

// cleanupContext outlives ctx's cancellation, for undoing a failed Put.
func (r *Repo) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return clock.WithTimeout(r.clk, context.WithoutCancel(ctx), cleanupTimeout)
}

// Put implements repository.Repository. See the package documentation for
// how an object is committed.
func (r *Repo) Put(ctx context.Context, name string, rd io.Reader) error {
	key, err := r.key(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rd = repository.ContextReader(ctx, rd)

	// An object of one part goes in one conditional PutObject, which an
	// existing name refuses (then compared): names are mostly new, so no
	// request is spent asking first.
	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	buf := *bp
	n, err := io.ReadFull(rd, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return r.putSmall(ctx, name, key, buf[:n])
	case err != nil:
		return fmt.Errorf("put %s: %w", name, err)
	}

	// A large object under a name that exists already is only compared:
	// the content is hashed as it is read, and nothing is sent.
	if info, err := r.stat(ctx, key); err == nil {
		h := sha256.New()
		h.Write(buf)
		size, err := io.Copy(h, rd)
		if err != nil {
			return fmt.Errorf("put %s: %w", name, err)
		}
		return r.compare(ctx, name, key, info, [32]byte(h.Sum(nil)), int64(len(buf))+size)
	} else if !errors.Is(err, repository.ErrNotFound) {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return r.putLarge(ctx, name, key, buf, rd)
}

// commitOptions create an object with its checksum, only if its key is free.
func commitOptions(sum [32]byte) minio.PutObjectOptions {
	opts := minio.PutObjectOptions{UserMetadata: map[string]string{metaSHA256: hex.EncodeToString(sum[:])}}
	opts.SetMatchETagExcept("*")
	return opts
}

// putSmall writes data with one conditional PutObject. The store checks
// the SHA-256 it is given against what it receives.
func (r *Repo) putSmall(ctx context.Context, name, key string, data []byte) error {
	sum := sha256.Sum256(data)
	return r.commit(ctx, name, key, sum, int64(len(data)), func() error {
		body := newBody(data)
		defer body.Close()
		_, err := r.core.PutObject(ctx, r.bucket, key, body, int64(len(data)), "", hex.EncodeToString(sum[:]), commitOptions(sum))
		return err
	})
}

// commit runs write, a conditional creation of key. When the store refuses
// it because key exists, the existing object is compared with sum and
// size: identical content is success, other content ErrConflict.
func (r *Repo) commit(ctx context.Context, name, key string, sum [32]byte, size int64, write func() error) error {
	for attempt := 1; ; attempt++ {
		err := write()
		if err == nil {
			return nil
		}
		code := errCode(err)
		if code == "ConditionalRequestConflict" && attempt < commitAttempts {
			continue // the store saw concurrent conditional writes and asks for a retry
		}
		if code != "PreconditionFailed" {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("put %s: %w", name, ctxErr)
			}
			return fmt.Errorf("put %s: %w", name, r.mapErr(err))
		}
		info, err := r.stat(ctx, key)
		if errors.Is(err, repository.ErrNotFound) && attempt < commitAttempts {
			continue // deleted since it refused us: the name is free again
		}
		if err != nil {
			return fmt.Errorf("put %s: %w", name, err)
		}
		return r.compare(ctx, name, key, info, sum, size)
	}
}

// compare decides a Put of content (sum, size) under an existing object.
func (r *Repo) compare(ctx context.Context, name, key string, info minio.ObjectInfo, sum [32]byte, size int64) error {
	if info.Size != size {
		return fmt.Errorf("put %s: %w", name, repository.ErrConflict)
	}
	stored, ok := storedSum(info)
	if !ok {
		// Not written by this package: hash what is there.
		var err error
		if stored, err = r.hashObject(ctx, key); err != nil {
			return fmt.Errorf("put %s: compare with existing: %w", name, err)
		}
	}
	if stored != sum {
		return fmt.Errorf("put %s: %w", name, repository.ErrConflict)
	}
	return nil
}

// storedSum returns the checksum kept in an object's metadata.
func storedSum(info minio.ObjectInfo) (sum [32]byte, ok bool) {
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, metaSHA256) || strings.EqualFold(k, "X-Amz-Meta-"+metaSHA256) {
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != len(sum) {
				return sum, false
			}
			return [32]byte(b), true
		}
	}
	return sum, false
}

func (r *Repo) hashObject(ctx context.Context, key string) (sum [32]byte, err error) {
	body, _, _, err := r.core.GetObject(ctx, r.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return sum, r.mapErr(err)
	}
	defer body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, body); err != nil {
		return sum, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// putLarge streams the object into a staging multipart upload, starting
// with the full first part in buf and reusing buf for every further part,
// then commits it to key by a conditional server-side copy.
func (r *Repo) putLarge(ctx context.Context, name, key string, buf []byte, rd io.Reader) (err error) {
	staging, err := r.stagingKey()
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	uploadID, err := r.core.NewMultipartUpload(ctx, r.bucket, staging, minio.PutObjectOptions{})
	if err != nil {
		return fmt.Errorf("put %s: start upload: %w", name, r.mapErr(err))
	}
	completed := false
	defer func() {
		cctx, cancel := r.cleanupContext(ctx)
		defer cancel()
		if !completed {
			_ = r.core.AbortMultipartUpload(cctx, r.bucket, staging, uploadID)
			return
		}
		_ = r.core.RemoveObject(cctx, r.bucket, staging, minio.RemoveObjectOptions{})
	}()

	h := sha256.New()
	var size int64
	var parts []minio.CompletePart
	data := buf
	for part := 1; ; part++ {
		if part > MaxParts {
			return fmt.Errorf("put %s: larger than %d parts of %d bytes: raise PartSize", name, MaxParts, r.partSize)
		}
		partSum := sha256.Sum256(data)
		h.Write(data)
		size += int64(len(data))
		body := newBody(data)
		p, err := r.core.PutObjectPart(ctx, r.bucket, staging, uploadID, part, body, int64(len(data)),
			minio.PutObjectPartOptions{Sha256Hex: hex.EncodeToString(partSum[:])})
		body.Close()
		if err != nil {
			return r.failed(ctx, name, fmt.Sprintf("upload part %d", part), err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag})
		n, err := io.ReadFull(rd, buf)
		if n == 0 && errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("put %s: %w", name, err)
		}
		data = buf[:n]
	}
	if _, err := r.core.CompleteMultipartUpload(ctx, r.bucket, staging, uploadID, parts, minio.PutObjectOptions{}); err != nil {
		return r.failed(ctx, name, "complete staging upload", err)
	}
	completed = true
	sum := [32]byte(h.Sum(nil))
	return r.commit(ctx, name, key, sum, size, func() error { return r.copyCommit(ctx, staging, key, size, sum) })
}

// failed wraps a store error of a Put step, preferring the context's
// error when the Put was canceled.
func (r *Repo) failed(ctx context.Context, name, step string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("put %s: %s: %w", name, step, ctxErr)
	}
	return fmt.Errorf("put %s: %s: %w", name, step, r.mapErr(err))
}

func (r *Repo) stagingKey() (string, error) {
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return r.prefix + StagingPrefix + hex.EncodeToString(rnd[:]), nil
}

// copyCommit creates key from the staging object: a multipart upload that
// carries the checksum, filled by server-side part copies and completed
// with If-None-Match: *. On failure the upload is aborted.
func (r *Repo) copyCommit(ctx context.Context, staging, key string, size int64, sum [32]byte) error {
	create := minio.PutObjectOptions{UserMetadata: map[string]string{metaSHA256: hex.EncodeToString(sum[:])}}
	uploadID, err := r.core.NewMultipartUpload(ctx, r.bucket, key, create)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			cctx, cancel := r.cleanupContext(ctx)
			defer cancel()
			_ = r.core.AbortMultipartUpload(cctx, r.bucket, key, uploadID)
		}
	}()
	step := max(int64(copyPartSize), (size+MaxParts-1)/MaxParts)
	var parts []minio.CompletePart
	for off, n := int64(0), 1; off < size; off, n = off+step, n+1 {
		p, err := r.core.CopyObjectPart(ctx, r.bucket, staging, r.bucket, key, uploadID, n, off, min(step, size-off), nil)
		if err != nil {
			return err
		}
		parts = append(parts, p)
	}
	var complete minio.PutObjectOptions
	complete.SetMatchETagExcept("*")
	if _, err := r.core.CompleteMultipartUpload(ctx, r.bucket, key, uploadID, parts, complete); err != nil {
		return err
	}
	done = true
	return nil
}

func (r *Repo) stat(ctx context.Context, key string) (minio.ObjectInfo, error) {
	info, err := r.core.StatObject(ctx, r.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return info, r.mapErr(err)
	}
	return info, nil
}

// Get implements repository.Repository with one ranged GET.
func (r *Repo) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	key, err := r.key(name)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("get %s: offset %d: %w", name, offset, repository.ErrInvalidRange)
	}
	if length == 0 {
		return r.emptyAt(ctx, name, key, offset)
	}
	var opts minio.GetObjectOptions
	switch {
	case length > 0 && length <= math.MaxInt64-offset:
		err = opts.SetRange(offset, offset+length-1)
	case offset > 0: // to the end
		err = opts.SetRange(offset, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	body, _, _, err := r.core.GetObject(ctx, r.bucket, key, opts)
	if err != nil {
		if errCode(err) == "InvalidRange" {
			// S3 refuses a range that starts at the end; the contract
			// reads it as empty, and only past the end is invalid.
			return r.emptyAt(ctx, name, key, offset)
		}
		return nil, fmt.Errorf("get %s: %w", name, r.mapErr(err))
	}
	return body, nil
}

// emptyAt is Get of nothing at offset: an empty reader when offset is
// within the object or at its end.
func (r *Repo) emptyAt(ctx context.Context, name, key string, offset int64) (io.ReadCloser, error) {
	info, err := r.stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	if offset > info.Size {
		return nil, fmt.Errorf("get %s: offset %d of %d: %w", name, offset, info.Size, repository.ErrInvalidRange)
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

// Stat implements repository.Repository.
func (r *Repo) Stat(ctx context.Context, name string) (repository.Object, error) {
	key, err := r.key(name)
	if err != nil {
		return repository.Object{}, err
	}
	info, err := r.stat(ctx, key)
	if err != nil {
		return repository.Object{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return repository.Object{Name: name, Size: info.Size}, nil
}

// List implements repository.Repository. S3 lists keys in byte order and
// never lists an upload in progress; staging objects are skipped.
func (r *Repo) List(ctx context.Context, prefix string, fn func(repository.Object) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for info := range r.core.ListObjectsIter(ctx, r.bucket, minio.ListObjectsOptions{Prefix: r.prefix + prefix, Recursive: true}) {
		if info.Err != nil {
			return fmt.Errorf("list %s: %w", prefix, r.mapErr(info.Err))
		}
		name := strings.TrimPrefix(info.Key, r.prefix)
		if repository.ValidName(name) != nil {
			continue // a staging object, or a key no Put could write
		}
		if err := fn(repository.Object{Name: name, Size: info.Size}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete implements repository.Repository. S3 deletes are idempotent.
func (r *Repo) Delete(ctx context.Context, name string) error {
	key, err := r.key(name)
	if err != nil {
		return err
	}
	if err := r.core.RemoveObject(ctx, r.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if err := r.mapErr(err); !errors.Is(err, repository.ErrNotFound) {
			return fmt.Errorf("delete %s: %w", name, err)
		}
	}
	return nil
}

// Sweep removes what crashed Puts left behind: incomplete multipart
// uploads under the prefix and staging objects, both only when started
// before before (pass a time well before any Put still running, e.g. a day
// ago). Objects are never touched. It returns how many it removed.
func (r *Repo) Sweep(ctx context.Context, before time.Time) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing when we return early
	removed := 0
	for u := range r.core.ListIncompleteUploads(ctx, r.bucket, r.prefix, true) {
		if u.Err != nil {
			return removed, fmt.Errorf("sweep: %w", r.mapErr(u.Err))
		}
		if !u.Initiated.Before(before) {
			continue
		}
		if err := r.core.AbortMultipartUpload(ctx, r.bucket, u.Key, u.UploadID); err != nil && errCode(err) != "NoSuchUpload" {
			return removed, fmt.Errorf("sweep: abort upload of %s: %w", u.Key, r.mapErr(err))
		}
		removed++
	}
	for info := range r.core.ListObjectsIter(ctx, r.bucket, minio.ListObjectsOptions{Prefix: r.prefix + StagingPrefix, Recursive: true}) {
		if info.Err != nil {
			return removed, fmt.Errorf("sweep: %w", r.mapErr(info.Err))
		}
		if !info.LastModified.Before(before) {
			continue
		}
		if err := r.core.RemoveObject(ctx, r.bucket, info.Key, minio.RemoveObjectOptions{}); err != nil {
			return removed, fmt.Errorf("sweep: remove %s: %w", info.Key, r.mapErr(err))
		}
		removed++
	}
	return removed, nil
}

// body is a request body over a pooled buffer. A request can return (the
// store answered early, with an error) while the HTTP transport still
// sends its body from another goroutine; Close waits for a Read under way
// and makes later ones fail, so the buffer can be reused at once.
type body struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

func newBody(data []byte) *body { return &body{r: bytes.NewReader(data)} }

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	return b.r.Read(p)
}

// Seek lets the client rewind the body to retry a request.
func (b *body) Seek(offset int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	return b.r.Seek(offset, whence)
}

// Close ends the body's use of its buffer.
func (b *body) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

var errBodyClosed = errors.New("request body closed: the request has returned")
