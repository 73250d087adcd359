package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIOVersion is the version of the MinIO server module
// (github.com/minio/minio) the tests run: the newest the Go module proxy
// serves (MinIO tags its releases RELEASE.<date>, which Go does not read as
// versions, so the proxy knows its commits by pseudo-version only). It
// builds with the Go this project uses. scripts/setup reads it from here.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

const minioModule = "github.com/minio/minio"

// minioBuildTimeout bounds building the server; a cold build (module
// downloads and compiling on 2 cores) takes minutes.
const minioBuildTimeout = 25 * time.Minute

// minioReadyTimeout bounds how long StartMinIO waits for the health check.
const minioReadyTimeout = 60 * time.Second

var minioBinMu sync.Mutex

// MinIOBinary returns the MinIO server built from its Go module at
// MinIOVersion, cached as CacheDir()/bin/minio-<MinIOVersion>. The first
// call on a machine builds it (go install, several minutes cold;
// scripts/setup does it ahead of the tests); processes that call it at once
// build it once, under a lock on CacheDir()/bin/minio.lock.
func MinIOBinary(t testing.TB) string {
	t.Helper()
	minioBinMu.Lock()
	defer minioBinMu.Unlock()
	dir := filepath.Join(CacheDir(), "bin")
	bin := filepath.Join(dir, "minio-"+MinIOVersion)
	if isExecutable(bin) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: minio cache: %v", err)
	}
	unlock := lockFile(t, filepath.Join(dir, "minio.lock"), "the MinIO server in "+dir)
	defer unlock()
	if isExecutable(bin) {
		return bin // built by the process we waited for
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("testenv: building the MinIO server needs the go command on PATH (or run scripts/setup): %v", err)
	}
	tmp, err := os.MkdirTemp(dir, ".minio-build-")
	if err != nil {
		t.Fatalf("testenv: minio build: %v", err)
	}
	defer os.RemoveAll(tmp)
	t.Logf("testenv: building the MinIO server %s into %s (minutes on a cold machine; scripts/setup does this ahead)", MinIOVersion, bin)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), minioBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", minioModule+"@"+MinIOVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: go install %s@%s: %v\n%s", minioModule, MinIOVersion, err, tail(string(out), 40))
	}
	if err := os.Rename(filepath.Join(tmp, "minio"), bin); err != nil {
		t.Fatalf("testenv: minio build: %v", err)
	}
	t.Logf("testenv: built the MinIO server in %v", time.Since(start).Round(time.Second))
	return bin
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// MinIO is a running MinIO server on loopback with random root
// credentials and its data in a temporary folder.
type MinIO struct {
	Endpoint  string // "127.0.0.1:port", plain HTTP, or HTTPS when CAPEM is set
	AccessKey string // the root user
	SecretKey string // the root password
	DataDir   string
	LogFile   string
	PID       int // the server process
	// CAPEM is the self-signed certificate MinIO serves TLS with (for
	// 127.0.0.1 and the guests' 10.0.2.100), from StartMinIOTLS; empty
	// for plain HTTP.
	CAPEM string
}

// StartMinIO starts a MinIO server (single drive, console off) on a free
// port of 127.0.0.1 and returns once its cluster health check says it
// serves requests. It is
// stopped in t.Cleanup. (MinIO also listens on ::1 at the same port: it
// always adds every loopback address, so nothing leaves the machine.)
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, false)
}

// StartMinIOTLS is StartMinIO serving HTTPS with a self-signed
// certificate (MinIO.CAPEM), as peers that speak S3 over TLS only need.
func StartMinIOTLS(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, true)
}

func startMinIO(t testing.TB, withTLS bool) *MinIO {
	t.Helper()
	bin := MinIOBinary(t)
	dir := t.TempDir()
	m := &MinIO{
		AccessKey: "test-" + randomHex(t, 6),
		SecretKey: randomHex(t, 20),
		DataDir:   filepath.Join(dir, "data"),
		LogFile:   filepath.Join(dir, "minio.log"),
	}
	mustMkdir(t, m.DataDir, 0o700)
	certs := filepath.Join(dir, "certs") // so nothing is read from or written to ~/.minio
	mustMkdir(t, certs, 0o700)
	if withTLS {
		m.CAPEM = selfSigned(t, certs)
	}
	logf, err := os.OpenFile(m.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			t.Logf("testenv: minio %s log:\n%s", m.Endpoint, logTail(m.LogFile))
		}
	})

	const attempts = 3
	for i := 1; ; i++ {
		m.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		exited, err := m.start(t, bin, certs, logf)
		if err == nil {
			return m
		}
		tl := logTail(m.LogFile)
		if exited && i < attempts && strings.Contains(tl, "in use") {
			t.Logf("testenv: minio port of %s taken, retrying", m.Endpoint)
			continue
		}
		t.Fatalf("testenv: start minio on %s: %v\n%s", m.Endpoint, err, tl)
	}
}

func (m *MinIO) start(t testing.TB, bin, certs string, logf *os.File) (exited bool, err error) {
	t.Helper()
	// The console is off; its address is still set to loopback, so that
	// nothing could ever listen elsewhere.
	console := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cmd := exec.Command(bin, "server", "--address", m.Endpoint, "--console-address", console,
		"--certs-dir", certs, "--quiet", "--anonymous", m.DataDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(cleanEnv(),
		"MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", // no console listener at all
		"MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off")
	proc, err := startServer(cmd)
	if err != nil {
		return false, err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: m.Transport(t)}
	deadline := time.Now().Add(minioReadyTimeout)
	for {
		if done, waitErr := proc.exited(); done {
			return true, fmt.Errorf("minio exited: %v", waitErr)
		}
		// /minio/health/live answers 200 before the object layer and IAM
		// are up; /minio/health/cluster waits for them and write quorum.
		resp, err := client.Get(m.URL() + "/minio/health/cluster")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				m.PID = proc.pid()
				t.Cleanup(proc.stop)
				return false, nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			proc.stop()
			return false, fmt.Errorf("no healthy answer within %v: %w", minioReadyTimeout, err)
		}
		proc.pause(100 * time.Millisecond)
	}
}

// Client returns a client of the server with the root credentials.
func (m *MinIO) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure: m.CAPEM != "", Transport: m.Transport(t)})
	if err != nil {
		t.Fatalf("testenv: minio client: %v", err)
	}
	return c
}

// CreateBucket creates a bucket named name.
func (m *MinIO) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("testenv: create bucket %s: %v", name, err)
	}
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (m *MinIO) NewBucket(t testing.TB) string {
	t.Helper()
	name := "b-" + randomHex(t, 8)
	m.CreateBucket(t, name)
	return name
}

// Keys returns every key in the bucket, including staging objects, in
// order.
func (m *MinIO) Keys(t testing.TB, bucket string) []string {
	t.Helper()
	var keys []string
	for o := range m.Client(t).ListObjectsIter(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("testenv: list %s: %v", bucket, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// IncompleteUploads returns the multipart uploads in progress on the
// server, as "<hash of bucket/key>/<upload id>". They are read from the
// data folder: MinIO's ListMultipartUploads lists the uploads of one exact
// key only, so through the API "none at all" cannot be checked.
func (m *MinIO) IncompleteUploads(t testing.TB) []string {
	t.Helper()
	root := filepath.Join(m.DataDir, ".minio.sys", "multipart")
	objects, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("testenv: minio uploads: %v", err)
	}
	var uploads []string
	for _, o := range objects {
		if !o.IsDir() {
			continue
		}
		ids, err := os.ReadDir(filepath.Join(root, o.Name()))
		if err != nil {
			t.Fatalf("testenv: minio uploads: %v", err)
		}
		for _, id := range ids {
			if id.IsDir() {
				uploads = append(uploads, o.Name()+"/"+id.Name())
			}
		}
	}
	return uploads
}

// URL is the server's base URL.
func (m *MinIO) URL() string {
	if m.CAPEM != "" {
		return "https://" + m.Endpoint
	}
	return "http://" + m.Endpoint
}

// Transport is an HTTP transport that trusts the server's certificate
// (the default one for plain HTTP).
func (m *MinIO) Transport(t testing.TB) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if m.CAPEM == "" {
		return tr
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(m.CAPEM)) {
		t.Fatalf("testenv: minio certificate unreadable")
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr
}

// selfSigned writes MinIO's public.crt and private.key into certs: a
// self-signed certificate for 127.0.0.1 and 10.0.2.100 (where a QEMU
// guest reaches a forwarded store), valid for a day. It returns its PEM.
func selfSigned(t testing.TB, certs string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "pglogship test minio"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.2.100")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	mustWriteFile(t, filepath.Join(certs, "public.crt"), crt, 0o600)
	mustWriteFile(t, filepath.Join(certs, "private.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return string(crt)
}
