package s3

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/pglogship/pglogship/repository"
)

var _ repository.DirectUploader = (*Repo)(nil)

// MaxAuthorizationTTL bounds how long an authorisation handed to a guest
// lives: a leaked one must be worthless soon.
const MaxAuthorizationTTL = time.Hour

// probePrefix is where probes look, below Config.Prefix: a dotted folder
// no object name can fall in, so a probe's object never exists.
const probePrefix = ".probe/"

// presigner signs requests for the address the guests reach the store at
// (Config.GuestEndpoint): the host is part of what is signed.
func newPresigner(cfg Config) (*minio.Client, error) {
	ep := cfg.GuestEndpoint
	if ep == "" {
		ep = cfg.Endpoint
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1" // presigning must not ask the store; the region only enters the signature
	}
	return minio.New(ep, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: region,
	})
}

func checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxAuthorizationTTL {
		return fmt.Errorf("authorisation lifetime %s: must be above 0 and at most %s", ttl, MaxAuthorizationTTL)
	}
	return nil
}

// AuthorizePut implements repository.DirectUploader with a presigned
// PutObject whose signature covers If-None-Match: * (the store refuses an
// existing name), the SHA-256 the store must find in the body
// (x-amz-checksum-sha256, which it checks and keeps) and this package's
// own checksum metadata, so Put recognises the object as any other.
func (r *Repo) AuthorizePut(ctx context.Context, name string, size int64, sum [32]byte, ttl time.Duration) (repository.Authorization, error) {
	key, err := r.key(name)
	if err != nil {
		return repository.Authorization{}, err
	}
	if err := checkTTL(ttl); err != nil {
		return repository.Authorization{}, err
	}
	if size < 0 || size > MaxPartSize {
		return repository.Authorization{}, fmt.Errorf("authorize %s: %d bytes: one upload holds at most %d", name, size, MaxPartSize)
	}
	h := map[string]string{
		"If-None-Match":            "*",
		"X-Amz-Checksum-Sha256":    base64.StdEncoding.EncodeToString(sum[:]),
		"X-Amz-Meta-" + metaSHA256: hex.EncodeToString(sum[:]),
	}
	hdr := http.Header{}
	for k, v := range h {
		hdr.Set(k, v)
	}
	expires := r.clk.Now().Add(ttl)
	u, err := r.presign.PresignHeader(ctx, http.MethodPut, r.bucket, key, ttl, nil, hdr)
	if err != nil {
		return repository.Authorization{}, fmt.Errorf("authorize %s: %w", name, err)
	}
	return repository.Authorization{Method: http.MethodPut, URL: u.String(), Header: h, Expires: expires, CAPEM: r.guestCA}, nil
}

// AuthorizeProbe implements repository.DirectUploader: a presigned HEAD
// of an object that cannot exist, which the store answers 404 only when
// the signature holds there.
func (r *Repo) AuthorizeProbe(ctx context.Context, ttl time.Duration) (repository.Authorization, error) {
	if err := checkTTL(ttl); err != nil {
		return repository.Authorization{}, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	expires := r.clk.Now().Add(ttl)
	u, err := r.presign.PresignHeader(ctx, http.MethodHead, r.bucket, r.prefix+probePrefix+hex.EncodeToString(rnd[:]), ttl, nil, nil)
	if err != nil {
		return repository.Authorization{}, fmt.Errorf("authorize a probe: %w", err)
	}
	return repository.Authorization{Method: http.MethodHead, URL: u.String(), Expires: expires, ProbeStatus: http.StatusNotFound,
		CAPEM: r.guestCA}, nil
}

// StoredChecksum implements repository.DirectUploader: the SHA-256 the
// store checked and kept when the object was put with one.
func (r *Repo) StoredChecksum(ctx context.Context, name string) (repository.Object, [32]byte, error) {
	key, err := r.key(name)
	if err != nil {
		return repository.Object{}, [32]byte{}, err
	}
	info, err := r.core.StatObject(ctx, r.bucket, key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		return repository.Object{}, [32]byte{}, fmt.Errorf("stat %s: %w", name, r.mapErr(err))
	}
	obj := repository.Object{Name: name, Size: info.Size}
	b, err := base64.StdEncoding.DecodeString(info.ChecksumSHA256)
	if info.ChecksumSHA256 == "" || err != nil || len(b) != 32 {
		return obj, [32]byte{}, fmt.Errorf("stat %s: %w", name, repository.ErrNoStoreChecksum)
	}
	return obj, [32]byte(b), nil
}
