package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

const testSegSize = 1 << 20 // the smallest segment PostgreSQL allows

// archive is an in-memory WAL archive: a guest.FetchFunc that counts what
// it was asked for and can hold a file back or fail on it.
type archive struct {
	mu      sync.Mutex
	files   map[string][]byte
	asked   []string
	hold    map[string]chan struct{} // closed to let the fetch go on
	failing map[string]error
}

func newArchive(names ...string) *archive {
	a := &archive{files: map[string][]byte{}, hold: map[string]chan struct{}{}, failing: map[string]error{}}
	for i, n := range names {
		a.files[n] = bytes.Repeat([]byte{byte(i + 1)}, testSegSize)
	}
	return a
}

func (a *archive) fetch(ctx context.Context, name string, w io.Writer) error {
	a.mu.Lock()
	a.asked = append(a.asked, name)
	data, ok := a.files[name]
	hold, err := a.hold[name], a.failing[name]
	a.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%s: %w", name, guest.ErrNoSuchWAL)
	}
	_, err = w.Write(data)
	return err
}

func (a *archive) askedFor() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := append([]string(nil), a.asked...)
	sort.Strings(out)
	return out
}

func segs(tli uint32, from, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, wal.FileName{Kind: wal.Segment, Timeline: tli, Seg: uint32(from + i)}.String())
	}
	return out
}

// fetchPair starts the fetch server on a spool over a, fetching ahead
// segments ahead, and returns the socket and the spool.
func fetchPair(t *testing.T, a *archive, ahead int) (string, *spool, string) {
	t.Helper()
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	require.NoError(t, os.Mkdir(spoolDir, 0o700))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "pg_wal"), 0o700))
	sock := filepath.Join(spoolDir, "fetch.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	sp := newSpool(spoolDir, nil, a.fetch, ahead)
	srv := serveFetches(context.Background(), ln, sp, testenv.Logger(t))
	t.Cleanup(func() { sp.Close(); srv.Close() })
	return sock, sp, dir
}

// The fetch mode's client and the runtime's server without PostgreSQL: a
// segment lands at %p, the next ones are fetched ahead and later handed
// over from the spool, a missing file exits 1, a failing fetch exits above
// 125 (so PostgreSQL stops instead of promoting early), and the spool holds
// no more than its window.
func TestFetchClientServer(t *testing.T) {
	ctx := context.Background()
	names := segs(1, 1, 10)
	a := newArchive(append(names, "00000002.history")...)
	sock, sp, dir := fetchPair(t, a, 3)
	dst := filepath.Join(dir, "pg_wal", "RECOVERYXLOG")

	require.NoError(t, FetchFile(ctx, sock, names[0], dst))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, a.files[names[0]], got)
	require.Eventually(t, func() bool { return sp.Stats().Fetched == 4 }, 10*time.Second, time.Millisecond,
		"the three segments after the first are fetched ahead")
	assert.Equal(t, names[:4], a.askedFor())

	for _, n := range names[1:4] {
		assert.Equal(t, 0, fetchMain(ctx, []string{sock, n, dst}))
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		assert.Equal(t, a.files[n], got, n)
	}
	st := sp.Stats()
	assert.Equal(t, 4, st.Requests)
	assert.Equal(t, 3, st.FromSpool, "the segments fetched ahead were handed over at once")
	assert.Equal(t, 1, st.Waited)

	require.Eventually(t, func() bool { return sp.Stats().Fetched == 7 }, 10*time.Second, time.Millisecond)
	entries, err := os.ReadDir(filepath.Join(dir, "spool"))
	require.NoError(t, err)
	assert.Len(t, entries, 3+1, "the window of three, and the socket")

	// A timeline history file is handed over, and fetches nothing ahead.
	require.NoError(t, FetchFile(ctx, sock, "00000002.history", filepath.Join(dir, "pg_wal", "RECOVERYHISTORY")))
	assert.Equal(t, 7+1, sp.Stats().Fetched)

	// Past the end of the archive: exit 1, which ends recovery there.
	require.ErrorIs(t, FetchFile(ctx, sock, "00000003.history", dst), guest.ErrNoSuchWAL)
	assert.Equal(t, FetchExitNotFound, fetchMain(ctx, []string{sock, segs(1, 40, 1)[0], dst}))

	// A fetch that fails is not a missing file.
	a.mu.Lock()
	a.failing[segs(1, 50, 1)[0]] = errors.New("repository unreachable")
	a.mu.Unlock()
	err = FetchFile(ctx, sock, segs(1, 50, 1)[0], dst)
	require.ErrorContains(t, err, "repository unreachable")
	require.NotErrorIs(t, err, guest.ErrNoSuchWAL)
	assert.Equal(t, FetchExitFailed, fetchMain(ctx, []string{sock, segs(1, 50, 1)[0], dst}))
	assert.Greater(t, FetchExitFailed, 125)

	// A name that is not a WAL file is refused before anything is asked.
	require.ErrorIs(t, FetchFile(ctx, sock, "../../etc/passwd", dst), wal.ErrInvalidFileName)
}

// Recovery moving to another timeline: the segments fetched ahead on the
// old one leave the spool, and one still on its way is cancelled.
func TestSpoolFollowsTheTimeline(t *testing.T) {
	ctx := context.Background()
	tl1, tl2 := segs(1, 1, 8), segs(2, 3, 5)
	a := newArchive(append(tl1, tl2...)...)
	hold := make(chan struct{})
	a.hold[tl1[3]] = hold // still on its way when recovery moves on
	sock, sp, dir := fetchPair(t, a, 3)
	dst := filepath.Join(dir, "pg_wal", "RECOVERYXLOG")

	require.NoError(t, FetchFile(ctx, sock, tl1[0], dst))
	require.Eventually(t, func() bool { return sp.Stats().Fetched == 3 }, 10*time.Second, time.Millisecond)
	require.NoError(t, FetchFile(ctx, sock, tl2[0], dst), "the switch happened in segment 3")
	close(hold)
	require.Eventually(t, func() bool { return sp.Stats().Fetched == 3+1+3 }, 10*time.Second, time.Millisecond)
	assert.Contains(t, a.askedFor(), tl1[3])
	require.Eventually(t, func() bool {
		entries, _ := os.ReadDir(filepath.Join(dir, "spool"))
		return len(entries) == 3+1
	}, 10*time.Second, time.Millisecond, "only timeline 2's window is left")
	for _, n := range tl2[1:4] {
		require.NoError(t, FetchFile(ctx, sock, n, dst))
	}
	st := sp.Stats()
	assert.Equal(t, 3, st.FromSpool)

	sp.Close()
	assert.ErrorIs(t, func() error { _, err := sp.Get(ctx, tl2[4]); return err }(), errSpoolClosed)
	entries, err := os.ReadDir(filepath.Join(dir, "spool"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "closing removed what nobody took; the socket is the caller's")
}

// fakeHost answers the runtime's calls on the other end of the protocol:
// files from a, zstd-compressed, several at once with their data frames
// interleaved, and the end call after every other.
type fakeHost struct {
	a       *archive
	corrupt string // a file whose checksum it gets wrong
	sha256  string // a file it sums with SHA-256, which the runtime does not check
	w       *proto.Writer
	wmu     sync.Mutex
	wg      sync.WaitGroup
	cancels []uint64
}

func (h *fakeHost) serve(t *testing.T, r *proto.Reader) {
	for {
		var c proto.Call
		if err := r.ReadJSON(proto.TypeCall, &c); err != nil {
			t.Errorf("fake host: %v", err)
			return
		}
		switch c.Op {
		case CallFetch:
			var a FetchCallArgs
			assert.NoError(t, json.Unmarshal(c.Args, &a))
			h.wg.Add(1)
			go func() { defer h.wg.Done(); h.send(c.ID, a.Name) }()
		case CallCancel:
			var a CancelCallArgs
			assert.NoError(t, json.Unmarshal(c.Args, &a))
			h.wmu.Lock()
			h.cancels = append(h.cancels, a.ID)
			h.wmu.Unlock()
		case CallEnd:
			h.wg.Wait()
			h.wmu.Lock()
			assert.NoError(t, h.w.WriteJSON(proto.TypeCallEnd, proto.CallEnd{ID: c.ID}))
			h.wmu.Unlock()
			return
		}
	}
}

func (h *fakeHost) send(id uint64, name string) {
	var raw bytes.Buffer
	err := h.a.fetch(context.Background(), name, &raw)
	enc, _ := zstd.NewWriter(nil)
	compressed := enc.EncodeAll(raw.Bytes(), nil)
	for len(compressed) > 0 && err == nil {
		n := min(len(compressed), 1000) // small frames, so they interleave
		h.wmu.Lock()
		err = h.w.WriteCallData(id, compressed[:n])
		h.wmu.Unlock()
		compressed = compressed[n:]
	}
	end := proto.CallEnd{ID: id, RawSize: int64(raw.Len()), Sum: checksum.Of(checksum.XXH3, raw.Bytes()).String()}
	switch name {
	case h.corrupt:
		end.Sum = checksum.Sum{Algorithm: checksum.XXH3}.String()
	case h.sha256:
		end.Sum = checksum.Of(checksum.SHA256, raw.Bytes()).String()
	}
	if err != nil {
		end = proto.CallEnd{ID: id, Error: err.Error(), Code: ErrorCode(err)}
	}
	h.wmu.Lock()
	_ = h.w.WriteJSON(proto.TypeCallEnd, end)
	h.wmu.Unlock()
}

// The runtime's side of the calls: fetches made in parallel get their own
// files from interleaved frames, verified; the host's not-found keeps its
// sentinel; a wrong checksum is an error; a cancelled fetch tells the host;
// the end call waits for every answer.
func TestHostCalls(t *testing.T) {
	ctx := context.Background()
	names := segs(1, 1, 7)
	a := newArchive(names...)
	hostIn, rtOut := io.Pipe()
	rtIn, hostOut := io.Pipe()
	h := &fakeHost{a: a, corrupt: names[5], sha256: names[6], w: proto.NewWriter(hostOut)}
	hostDone := make(chan struct{})
	go func() { defer close(hostDone); h.serve(t, proto.NewReader(hostIn)) }()
	var broken bool
	c := startHostCalls(proto.NewReader(rtIn), proto.NewWriter(rtOut), func() { broken = true })

	var wg sync.WaitGroup
	got := make([]bytes.Buffer, 5)
	errs := make([]error, 5)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.Fetch(ctx, names[i], &got[i]) }()
	}
	wg.Wait()
	for i := range got {
		require.NoError(t, errs[i], names[i])
		assert.True(t, bytes.Equal(a.files[names[i]], got[i].Bytes()), names[i])
	}
	err := c.Fetch(ctx, segs(1, 30, 1)[0], io.Discard)
	require.ErrorIs(t, err, guest.ErrNoSuchWAL)
	err = c.Fetch(ctx, names[5], io.Discard)
	require.ErrorContains(t, err, "received 1048576 bytes with checksum", "a wrong checksum fails the fetch")
	err = c.Fetch(ctx, names[6], io.Discard)
	require.ErrorContains(t, err, "a sha256 checksum, not XXH3")

	hold := make(chan struct{})
	a.hold[names[0]] = hold
	cctx, cancel := context.WithCancel(ctx)
	fetched := make(chan error)
	go func() { fetched <- c.Fetch(cctx, names[0], io.Discard) }()
	require.Eventually(t, func() bool { return len(a.askedFor()) == 9 }, 10*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-fetched, context.Canceled)
	close(hold)

	require.NoError(t, c.finish())
	<-hostDone
	assert.Len(t, h.cancels, 1, "the host heard of the cancelled fetch")
	assert.False(t, broken)
	require.Error(t, c.Fetch(ctx, names[0], io.Discard), "no calls after the end")
}
