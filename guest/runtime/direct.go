package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/internal/sshutil"
	"github.com/pglogship/pglogship/internal/walbundle"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/checksum"
	sftprepo "github.com/pglogship/pglogship/repository/sftp"
	"github.com/pglogship/pglogship/wal"
)

// Operations of direct shipping (guest.DirectShipper).
const (
	OpStage = "bundle_stage" // guest.StageRequest -> guest.Staged
	OpSend  = "bundle_send"  // SendArgs
	OpDrop  = "bundle_drop"  // DropArgs
	OpProbe = "probe"        // guest.Destination
	// OpStream bundles like OpStage and streams the bundle as one file
	// (codec none) before the response, a guest.Staged.
	OpStream = "bundle_stream"
)

// SendArgs says where OpSend sends a staged bundle.
type SendArgs struct {
	Object string            `json:"object"`
	To     guest.Destination `json:"to"`
}

// DropArgs names the staged bundle OpDrop removes.
type DropArgs struct {
	Object string `json:"object"`
}

// outgoing is the folder, inside the temporary folder, that holds staged
// bundles; its name is no WAL file's, so Ready never lists it.
const outgoing = ".outgoing"

// stagedPath is where the bundle of object is staged.
func (s *server) stagedPath(object string) string {
	h := sha256.Sum256([]byte(object))
	return filepath.Join(s.dir, outgoing, hex.EncodeToString(h[:16])+".bundle")
}

// clearOutgoing removes bundles staged by an earlier runtime: they were
// never verified, and their WAL is still in the folder.
func clearOutgoing(dir string) error {
	return os.RemoveAll(filepath.Join(dir, outgoing))
}

// stage bundles the named files of the temporary folder into a staged
// file: the same pipeline as the host's (walbundle), fed with the files
// as they lie here, each segment checked against the cluster first.
func (s *server) stage(ctx context.Context, req guest.StageRequest) (guest.Staged, error) {
	if err := repository.ValidName(req.Object); err != nil {
		return guest.Staged{}, err
	}
	if len(req.Names) == 0 {
		return guest.Staged{}, errors.New("stage a bundle: no files")
	}
	if !req.Checksum.Valid() || req.Raw && req.Checksum != checksum.SHA256 {
		return guest.Staged{}, fmt.Errorf("stage a bundle: checksum %v refused (history files sum with SHA-256)", req.Checksum)
	}
	if req.Raw {
		return s.stageRaw(req)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, outgoing), 0o700); err != nil {
		return guest.Staged{}, fmt.Errorf("stage a bundle: %w", err)
	}
	path := s.stagedPath(req.Object)
	f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return guest.Staged{}, fmt.Errorf("stage a bundle: %w", err)
	}
	defer os.Remove(path + ".tmp") // no-op once renamed
	defer f.Close()
	staged, err := s.build(ctx, f, req)
	if err != nil {
		return guest.Staged{}, err
	}
	if err := f.Close(); err != nil {
		return guest.Staged{}, err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return guest.Staged{}, err
	}
	return staged, nil
}

// stageRaw stages one timeline history file of the temporary folder as it
// is, to be sent as its own object.
func (s *server) stageRaw(req guest.StageRequest) (guest.Staged, error) {
	name := req.Names[0]
	if f, err := wal.ParseFileName(name); len(req.Names) != 1 || err != nil || f.Kind != wal.History {
		return guest.Staged{}, fmt.Errorf("stage %v as it is: only one timeline history file can be", req.Names)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return guest.Staged{}, fmt.Errorf("stage %s: %w", name, err)
	}
	if len(b) > maxHistorySize {
		return guest.Staged{}, fmt.Errorf("stage %s: %d bytes, more than a history file holds (%d)", name, len(b), maxHistorySize)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, outgoing), 0o700); err != nil {
		return guest.Staged{}, fmt.Errorf("stage %s: %w", name, err)
	}
	if err := os.WriteFile(s.stagedPath(req.Object), b, 0o600); err != nil {
		return guest.Staged{}, fmt.Errorf("stage %s: %w", name, err)
	}
	sum := checksum.Of(checksum.SHA256, b)
	n := int64(len(b))
	return guest.Staged{Object: req.Object, Size: n, Sum: sum, Files: []guest.BundleFile{{Name: name, RawSize: n, Sum: sum}},
		RawBytes: n}, nil
}

// maxHistorySize bounds a history file staged as it is (a few hundred
// bytes in practice; one line per timeline switch).
const maxHistorySize = 1 << 20

// build writes the bundle of req's files to w, each segment opened only
// once its header matches the cluster, and says what it holds: the
// pipeline stage and stream share.
func (s *server) build(ctx context.Context, w io.Writer, req guest.StageRequest) (guest.Staged, error) {
	h := checksum.New(req.Checksum) // stage and stream checked it
	cw := &countingWriter{w: io.MultiWriter(w, h)}
	b, err := walbundle.New(cw, req.Object, nil, req.Created, nil)
	if err != nil {
		return guest.Staged{}, err
	}
	chk := &Sender{inst: s.inst}
	open := func(name string) (io.ReadCloser, error) { return chk.open(s.dir, name) }
	codec, err := walbundle.FrameCodec(s.codec)
	if err != nil {
		return guest.Staged{}, err
	}
	if err := b.AddFiles(ctx, req.Names, open, sendWorkers(), codec); err != nil {
		return guest.Staged{}, err
	}
	res, err := b.Close()
	if err != nil {
		return guest.Staged{}, err
	}
	return guest.Staged{Object: req.Object, Size: cw.n, Sum: h.Sum(), Files: res.Files, Unknown: res.Unknown,
		RawBytes: res.RawBytes}, nil
}

// stream bundles the named files like stage and sends the bundle's bytes
// to the host as one file. Every segment is checked before the file
// starts, so a bad one refuses the request instead of cutting the stream.
func (s *server) stream(ctx context.Context, req guest.StageRequest) (guest.Staged, error) {
	if err := repository.ValidName(req.Object); err != nil {
		return guest.Staged{}, err
	}
	if !req.Checksum.Valid() || req.Raw {
		return guest.Staged{}, fmt.Errorf("stream a bundle: checksum %v or a history file refused", req.Checksum)
	}
	chk := &Sender{inst: s.inst}
	for _, name := range req.Names {
		f, err := chk.open(s.dir, name)
		if err != nil {
			return guest.Staged{}, err
		}
		f.Close()
	}
	if err := s.w.WriteJSON(proto.TypeFileStart, proto.FileStart{Name: req.Object, Codec: string(guest.CodecNone)}); err != nil {
		return guest.Staged{}, err
	}
	chunks := proto.NewChunker(proto.MaxData, func(b []byte) error { return s.w.Write(proto.TypeData, b) })
	staged, err := s.build(ctx, chunks, req)
	if err == nil {
		err = chunks.Flush()
	}
	if err != nil {
		return guest.Staged{}, err
	}
	end := proto.FileEnd{Name: req.Object, RawSize: staged.Size, Sum: staged.Sum.String()}
	if err := s.w.WriteJSON(proto.TypeFileEnd, end); err != nil {
		return guest.Staged{}, err
	}
	return staged, nil
}

// send sends a staged bundle where the host said.
func (s *server) send(ctx context.Context, a SendArgs) error {
	if err := repository.ValidName(a.Object); err != nil {
		return err
	}
	f, err := os.Open(s.stagedPath(a.Object))
	if err != nil {
		return fmt.Errorf("send %s: not staged: %w", a.Object, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	dial, done, err := dialVia(ctx, a.To)
	if err != nil {
		return err
	}
	defer done()
	if a.To.Dir != "" {
		return putInto(ctx, a.To.Dir, a.Object, f)
	}
	if a.To.SFTP != nil {
		repo, err := openSFTP(ctx, a.To.SFTP, dial)
		if err != nil {
			return err
		}
		defer repo.Close()
		if err := repo.Put(ctx, a.Object, f); err != nil {
			if errors.Is(err, repository.ErrConflict) {
				return fmt.Errorf("%w: %v", guest.ErrObjectExists, err)
			}
			return err
		}
		return nil
	}
	return request(ctx, a.To, f, st.Size(), http.StatusOK, dial)
}

// drop removes a staged bundle.
func (s *server) drop(object string) error {
	if err := repository.ValidName(object); err != nil {
		return err
	}
	if err := os.Remove(s.stagedPath(object)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// guestKey reads the guest's own private key and the verifier of a
// server's host key.
func guestKey(keyFile, knownHosts string) (ssh.AuthMethod, ssh.HostKeyCallback, error) {
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh key %s: %w", keyFile, err)
	}
	hostKeys, err := knownHostsCallback(knownHosts)
	if err != nil {
		return nil, nil, err
	}
	return ssh.PublicKeys(signer), hostKeys, nil
}

// connectError names a failed SSH connection: a host key that did not
// match, or a server out of reach.
func connectError(what string, err error) error {
	if errors.Is(err, guest.ErrHostKey) || strings.Contains(err.Error(), guest.ErrHostKey.Error()) {
		return fmt.Errorf("%w: %s: %v", guest.ErrHostKey, what, err)
	}
	return fmt.Errorf("%w: %s: %v", guest.ErrUnreachable, what, err)
}

// openSFTP connects to an SFTP repository with the guest's own key,
// verifying the server's host key against the line it was given; dial
// reaches it (nil: directly).
func openSFTP(ctx context.Context, acc *guest.SFTPAccess, dial sshutil.DialFunc) (*sftprepo.Repo, error) {
	auth, hostKeys, err := guestKey(acc.KeyFile, acc.KnownHosts)
	if err != nil {
		return nil, err
	}
	repo, err := sftprepo.New(ctx, sftprepo.Config{Addr: acc.Addr, User: acc.User, Auth: []ssh.AuthMethod{auth},
		HostKeyCallback: hostKeys, Root: acc.Root, Dial: dial})
	if err != nil {
		return nil, connectError("sftp repository", err)
	}
	return repo, nil
}

// relayTimeout bounds connecting to a log shipping server.
const relayTimeout = 30 * time.Second

// dialVia logs into to's log shipping server, if any, and returns how to
// open connections through it (nil: directly) and what closes it.
func dialVia(ctx context.Context, to guest.Destination) (sshutil.DialFunc, func(), error) {
	via := to.Via
	if via == nil {
		return nil, func() {}, nil
	}
	if to.Dir != "" {
		return nil, nil, errors.New("destination: a folder in the guest is not reached through a log shipping server")
	}
	if err := via.Validate(); err != nil {
		return nil, nil, err
	}
	auth, hostKeys, err := guestKey(via.KeyFile, via.KnownHosts)
	if err != nil {
		return nil, nil, err
	}
	c, err := sshutil.Dial(ctx, via.Addr, &ssh.ClientConfig{User: via.User, Auth: []ssh.AuthMethod{auth}, HostKeyCallback: hostKeys}, relayTimeout)
	if err != nil {
		return nil, nil, connectError("log shipping server "+via.String(), err)
	}
	// Connections through the server have no deadlines: closing the
	// client is what ends a send the caller gave up on.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := c.DialContext(ctx, network, addr)
		if err != nil {
			return nil, fmt.Errorf("through log shipping server %s: %w", via, err)
		}
		return conn, nil
	}
	return dial, func() {
		stop()
		c.Close()
	}, nil
}

// knownHostsCallback accepts exactly the host keys of the known_hosts
// lines given for the one server the access names.
func knownHostsCallback(lines string) (ssh.HostKeyCallback, error) {
	var keys [][]byte
	rest := []byte(lines)
	for len(bytes.TrimSpace(rest)) > 0 {
		_, _, key, _, next, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			return nil, fmt.Errorf("known hosts: %w", err)
		}
		keys = append(keys, key.Marshal())
		rest = next
	}
	if len(keys) == 0 {
		return nil, errors.New("known hosts: no host key given (host keys are always verified)")
	}
	return func(host string, _ net.Addr, key ssh.PublicKey) error {
		for _, k := range keys {
			if bytes.Equal(k, key.Marshal()) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s offered %s %s", guest.ErrHostKey, host, key.Type(), ssh.FingerprintSHA256(key))
	}, nil
}

// probe tells whether the destination is reachable from here.
func probe(ctx context.Context, to guest.Destination) error {
	dial, done, err := dialVia(ctx, to)
	if err != nil {
		return err
	}
	defer done()
	if to.SFTP != nil {
		repo, err := openSFTP(ctx, to.SFTP, dial)
		if err != nil {
			return err
		}
		return repo.Close()
	}
	if to.Dir != "" {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		p := filepath.Join(to.Dir, ".probe-"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("%w: %v", guest.ErrUnreachable, err)
		}
		f.Close()
		return os.Remove(p)
	}
	return request(ctx, to, nil, 0, to.ProbeStatus, dial)
}

// request makes the authorised HTTP request with body and wants status.
func request(ctx context.Context, to guest.Destination, body io.Reader, size int64, want int, dial sshutil.DialFunc) error {
	if !strings.HasPrefix(to.URL, "http://") && !strings.HasPrefix(to.URL, "https://") {
		return fmt.Errorf("destination %s: not an http(s) URL", to)
	}
	req, err := http.NewRequestWithContext(ctx, to.Method, to.URL, body)
	if err != nil {
		return fmt.Errorf("destination %s: %v", to, err)
	}
	if body != nil {
		req.ContentLength = size
		req.GetBody = nil
		// The store refuses a bad authorisation before the body: asked to
		// wait, it says why instead of cutting the upload short.
		req.Header.Set("Expect", "100-continue")
	}
	for k, v := range to.Header {
		req.Header.Set(k, v)
	}
	client, err := httpClient(to.CAPEM, dial)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", guest.ErrUnreachable, to, redactURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == want || want == http.StatusOK && resp.StatusCode/100 == 2 {
		return nil
	}
	what := storeError(resp)
	switch resp.StatusCode {
	case http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %s: %s", guest.ErrObjectExists, to, what)
	case http.StatusForbidden:
		return fmt.Errorf("%w: %s: %s", guest.ErrUploadDenied, to, what)
	}
	if want != http.StatusOK && resp.StatusCode/100 != 5 && what == resp.Status {
		// Not the store's answer (no S3 error document): something else
		// listens there.
		return fmt.Errorf("%w: %s answered %s", guest.ErrUnreachable, to, resp.Status)
	}
	return fmt.Errorf("%s: %s", to, what)
}

// redactURL keeps an authorisation's signature out of a client error.
func redactURL(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "?"); i >= 0 {
		if j := strings.IndexAny(msg[i:], "\": "); j >= 0 {
			return msg[:i] + "?[redacted]" + msg[i+j:]
		}
		return msg[:i] + "?[redacted]"
	}
	return msg
}

// storeError reads an S3 error document's code and message, or returns
// the status.
func storeError(resp *http.Response) string {
	var doc struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if xml.Unmarshal(b, &doc) != nil || doc.Code == "" {
		return resp.Status
	}
	return fmt.Sprintf("%s: %s: %s", resp.Status, doc.Code, doc.Message)
}

// httpClient makes a client for one request: a fresh connection each
// time, as a bundle is large and sent once, and a store may have closed
// an idle one meanwhile (a PUT on it would fail, never be retried). dial
// opens its connection (nil: directly).
func httpClient(caPEM string, dial sshutil.DialFunc) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	if dial != nil {
		tr.DialContext = dial
		tr.Proxy = nil // the log shipping server is the way there
	}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("destination: no certificate in the CA PEM")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

// putInto copies the bundle to root/object the way the fs repository
// commits: a temporary file beside it, fsynced, then linked to its name
// (which refuses an existing one) and the folder fsynced.
func putInto(ctx context.Context, root, object string, r io.Reader) error {
	if !filepath.IsAbs(root) {
		return fmt.Errorf("destination folder %q: must be absolute", root)
	}
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: folder %s: %v", guest.ErrUnreachable, root, err)
	}
	path := filepath.Join(root, filepath.FromSlash(object))
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	_, err = io.Copy(f, repository.ContextReader(ctx, r))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", guest.ErrObjectExists, object)
		}
		return err
	}
	return syncDir(dir)
}
