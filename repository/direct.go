package repository

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DirectUploader is implemented by repositories that let a third party, a
// guest's runtime, write an object straight into the store under an
// authorisation the host hands it, so WAL need not pass through the host
// (check with a type assertion). The guest holds no credential of the
// store: an authorisation names one object, its exact size and content
// checksum, allows one creation only while the name is free, and expires.
type DirectUploader interface {
	// AuthorizePut returns an authorisation to create name with exactly
	// size bytes whose SHA-256 is sum, valid for ttl. The store refuses
	// other content and a name that exists.
	AuthorizePut(ctx context.Context, name string, size int64, sum [32]byte, ttl time.Duration) (Authorization, error)
	// AuthorizeProbe returns a harmless read request whose answer shows
	// the store is reachable from where it is made and accepts the
	// store's authorisations there: the guest expects ProbeStatus.
	AuthorizeProbe(ctx context.Context, ttl time.Duration) (Authorization, error)
	// StoredChecksum returns an object's size and the SHA-256 that the
	// store itself computed of the bytes it stored (ErrNotFound when there
	// is none, ErrNoStoreChecksum when the store kept no such checksum).
	StoredChecksum(ctx context.Context, name string) (Object, [32]byte, error)
}

// ErrNoStoreChecksum: the store holds the object without a checksum of
// its own (it was not written under an authorisation of AuthorizePut).
var ErrNoStoreChecksum = errors.New("the store kept no checksum of the object")

// Authorization is one HTTP request a guest may make to the store: the
// method, the URL and the headers that must go with it. Whoever holds it
// can make that request until Expires, so it is never logged: String and
// LogValue leave the URL's query (the signature) out.
type Authorization struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Header  map[string]string `json:"header,omitempty"`
	Expires time.Time         `json:"expires"`
	// ProbeStatus is the HTTP status a probe expects (404: the probe's
	// object does not exist, which only the store can say).
	ProbeStatus int `json:"probe_status,omitempty"`
	// CAPEM is the PEM of the certificate authorities the guest trusts
	// for the store's TLS; empty means the guest's system roots.
	CAPEM string `json:"ca_pem,omitempty"`
}

// String describes the authorisation without its signature.
func (a Authorization) String() string {
	return fmt.Sprintf("%s %s (expires %s)", a.Method, redactQuery(a.URL), a.Expires.UTC().Format(time.RFC3339))
}

// GoString is String, so %#v does not print the signature either.
func (a Authorization) GoString() string { return a.String() }

// LogValue logs the authorisation without its signature.
func (a Authorization) LogValue() slog.Value { return slog.StringValue(a.String()) }

func redactQuery(u string) string {
	for i := 0; i < len(u); i++ {
		if u[i] == '?' {
			return u[:i] + "?[redacted]"
		}
	}
	return u
}
