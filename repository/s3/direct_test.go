package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
)

// do makes the request an authorisation allows, with body.
func do(t *testing.T, a repository.Authorization, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(a.Method, a.URL, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range a.Header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An authorisation writes exactly the object it names, with exactly the
// content it was made for, once; the store keeps its own checksum of it.
func TestAuthorizePut(t *testing.T) {
	m, bucket := minIOBucket(t)
	r := open(t, config(m, bucket, "direct"))
	ctx := context.Background()
	data := random(t, 3<<20)
	sum := sha256.Sum256(data)

	a, err := r.AuthorizePut(ctx, "wal/b1.bundle", int64(len(data)), sum, time.Minute)
	require.NoError(t, err)
	require.NotContains(t, a.URL, m.SecretKey)
	require.NotContains(t, a.String(), "Signature", "String hides the signature")

	t.Run("other content is refused", func(t *testing.T) {
		other := bytes.Clone(data)
		other[100] ^= 1
		code, body := do(t, a, other)
		require.Equal(t, http.StatusBadRequest, code, body)
		_, err := r.Stat(ctx, "wal/b1.bundle")
		require.ErrorIs(t, err, repository.ErrNotFound)
	})
	t.Run("without the signed headers it is refused", func(t *testing.T) {
		bare := a
		bare.Header = nil
		code, body := do(t, bare, data)
		require.GreaterOrEqual(t, code, 400, body)
		require.Contains(t, body, "AccessDenied")
		_, err := r.Stat(ctx, "wal/b1.bundle")
		require.ErrorIs(t, err, repository.ErrNotFound)
	})
	code, body := do(t, a, data)
	require.Equal(t, http.StatusOK, code, body)
	obj, stored, err := r.StoredChecksum(ctx, "wal/b1.bundle")
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), obj.Size)
	require.Equal(t, sum, stored)
	require.NoError(t, r.Put(ctx, "wal/b1.bundle", bytes.NewReader(data)), "Put knows it as its own")

	t.Run("once", func(t *testing.T) {
		code, body := do(t, a, data)
		require.Equal(t, http.StatusPreconditionFailed, code, body)
	})
	t.Run("another name", func(t *testing.T) {
		other := a
		other.URL = strings.Replace(a.URL, "b1.bundle", "b2.bundle", 1)
		code, body := do(t, other, data)
		require.Equal(t, http.StatusForbidden, code, body)
	})
	t.Run("expired", func(t *testing.T) {
		a, err := r.AuthorizePut(ctx, "wal/b3.bundle", int64(len(data)), sum, time.Second)
		require.NoError(t, err)
		time.Sleep(2 * time.Second)
		code, body := do(t, a, data)
		require.Equal(t, http.StatusForbidden, code, body)
		require.Contains(t, body, "expired")
	})
	t.Run("an object put by the host has no store checksum", func(t *testing.T) {
		require.NoError(t, r.Put(ctx, "wal/host.bundle", bytes.NewReader([]byte("x"))))
		_, _, err := r.StoredChecksum(ctx, "wal/host.bundle")
		require.ErrorIs(t, err, repository.ErrNoStoreChecksum)
	})
	t.Run("lifetime", func(t *testing.T) {
		_, err := r.AuthorizePut(ctx, "wal/b4.bundle", 1, sum, 2*time.Hour)
		require.ErrorContains(t, err, "at most")
	})

	t.Run("probe", func(t *testing.T) {
		p, err := r.AuthorizeProbe(ctx, time.Minute)
		require.NoError(t, err)
		code, _ := do(t, p, nil)
		require.Equal(t, p.ProbeStatus, code)
		cfg := config(m, bucket, "direct")
		cfg.GuestEndpoint = "127.0.0.1:1" // where nothing listens
		unreachable := open(t, cfg)
		p, err = unreachable.AuthorizeProbe(ctx, time.Minute)
		require.NoError(t, err)
		_, err = http.DefaultClient.Do(mustRequest(t, p))
		require.Error(t, err)
	})
}

func mustRequest(t *testing.T, a repository.Authorization) *http.Request {
	req, err := http.NewRequest(a.Method, a.URL, nil)
	require.NoError(t, err)
	return req
}

// Over TLS with a private CA: the host trusts it through Config.Transport,
// and a guest through the authorisation's CAPEM.
func TestAuthorizePutOverTLS(t *testing.T) {
	testenv.SkipIfShort(t)
	m := testenv.StartMinIOTLS(t)
	bucket := m.NewBucket(t)
	cfg := config(m, bucket, "tls")
	cfg.Insecure, cfg.Transport, cfg.GuestCAPEM = false, m.Transport(t), m.CAPEM
	r := open(t, cfg)
	ctx := context.Background()
	data := random(t, 1<<20)
	a, err := r.AuthorizePut(ctx, "wal/b.bundle", int64(len(data)), sha256.Sum256(data), time.Minute)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(a.URL, "https://"), a.String())
	require.Equal(t, m.CAPEM, a.CAPEM)
	req, err := http.NewRequest(a.Method, a.URL, bytes.NewReader(data))
	require.NoError(t, err)
	for k, v := range a.Header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: m.Transport(t)}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, sum, err := r.StoredChecksum(ctx, "wal/b.bundle")
	require.NoError(t, err)
	require.Equal(t, sha256.Sum256(data), sum)
}
