package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/repository/checksum"
)

// fakeRecoveringRuntime plays the runtime's side of OpRecover: it asks
// for the named files all at once, cancels the one named cancel once the
// others are answered, ends the calls and answers with res. It returns
// what each call got: the file, or the CallEnd's error code.
func fakeRecoveringRuntime(t *testing.T, r *proto.Reader, w *proto.Writer, names []string, cancel string, res guest.RecoveryResult) map[string]string {
	var req proto.Request
	require.NoError(t, r.ReadJSON(proto.TypeRequest, &req))
	require.Equal(t, runtime.OpRecover, req.Op)
	ids := map[uint64]string{}
	for i, n := range names {
		args, _ := json.Marshal(runtime.FetchCallArgs{Name: n})
		ids[uint64(i+1)] = n
		require.NoError(t, w.WriteJSON(proto.TypeCall, proto.Call{ID: uint64(i + 1), Op: runtime.CallFetch, Args: args}))
	}
	data := map[uint64]*bytes.Buffer{}
	got := map[string]string{}
	for len(got) < len(names) {
		typ, p, err := r.Read()
		require.NoError(t, err)
		switch typ {
		case proto.TypeCallData:
			id, b, err := proto.CallData(p)
			require.NoError(t, err)
			if data[id] == nil {
				data[id] = &bytes.Buffer{}
			}
			data[id].Write(b)
		case proto.TypeCallEnd:
			var end proto.CallEnd
			require.NoError(t, proto.DecodeJSON(p, &end))
			name := ids[end.ID]
			if end.Error != "" {
				got[name] = "error " + end.Code
				break
			}
			var raw []byte
			if data[end.ID] != nil {
				dec, err := zstd.NewReader(nil)
				require.NoError(t, err)
				raw, err = dec.DecodeAll(data[end.ID].Bytes(), nil)
				require.NoError(t, err)
			}
			sum, err := checksum.Parse(end.Sum)
			require.NoError(t, err, name)
			assert.Equal(t, checksum.Of(checksum.XXH3, raw), sum, "%s: XXH3, which the runtime checks", name)
			assert.Equal(t, end.RawSize, int64(len(raw)), name)
			got[name] = string(raw)
		default:
			t.Fatalf("frame type %d", typ)
		}
		if len(got) == len(names)-1 && cancel != "" {
			for id, n := range ids {
				if n == cancel {
					args, _ := json.Marshal(runtime.CancelCallArgs{ID: id})
					require.NoError(t, w.WriteJSON(proto.TypeCall, proto.Call{ID: 100, Op: runtime.CallCancel, Args: args}))
				}
			}
		}
	}
	require.NoError(t, w.WriteJSON(proto.TypeCall, proto.Call{ID: 101, Op: runtime.CallEnd}))
	var end proto.CallEnd
	require.NoError(t, r.ReadJSON(proto.TypeCallEnd, &end))
	assert.Equal(t, uint64(101), end.ID, "the end call is answered last")
	b, _ := json.Marshal(res)
	require.NoError(t, w.WriteJSON(proto.TypeResponse, proto.Response{ID: req.ID, Result: b}))
	return got
}

// The host's side of a recovery's calls: every file asked for is fetched
// at once, in parallel, and streamed back compressed with its checksum (or
// as the fetch function holds it compressed, with the checksum it gives); a
// missing one carries the no_such_wal code; a cancelled fetch's context
// ends; the end call is answered after all others, then the response.
func TestRecoverAnswersCalls(t *testing.T) {
	hostIn, rtOut := io.Pipe()
	rtIn, hostOut := io.Pipe()
	rt := &Runtime{w: proto.NewWriter(hostOut), r: proto.NewReader(hostIn), stop: func(context.Context) error { return nil }}
	files := map[string]string{
		"000000010000000000000001": string(bytes.Repeat([]byte("a"), 3<<20)),
		"000000010000000000000002": "b",
		"00000002.history":         "1\t0/3000000\tno recovery target specified\n",
	}
	const held = "000000010000000000000003"
	// stored is held compressed, and handed over as it is; late announces
	// its stream after writing raw bytes; oldSum announces one with a
	// SHA-256, which the runtime does not check.
	const stored, late, oldSum = "000000010000000000000004", "000000010000000000000005", "000000010000000000000006"
	storedData := bytes.Repeat([]byte("stored "), 100000)
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	storedStream := enc.EncodeAll(storedData, nil)
	names := []string{"000000010000000000000001", "000000010000000000000002", "00000002.history", held, "000000010000000000000009", stored, late, oldSum}
	var mu sync.Mutex
	running, most := 0, 0
	all := make(chan struct{})
	fetch := func(ctx context.Context, name string, w io.Writer) error {
		mu.Lock()
		running++
		most = max(most, running)
		if running == len(names) {
			close(all)
		}
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		<-all // every fetch runs at the same time
		zr, ok := w.(guest.ZstdReceiver)
		if !ok { // not require: this runs on the host's fetch goroutine
			t.Error("the host's writer does not take a stream as stored")
			return errors.New("no ZstdReceiver")
		}
		switch name {
		case held:
			<-ctx.Done()
			return ctx.Err()
		case stored:
			_, err := zr.Zstd(int64(len(storedData)), checksum.Of(checksum.XXH3, storedData)).Write(storedStream)
			return err
		case oldSum:
			_, err := zr.Zstd(int64(len(storedData)), checksum.Of(checksum.SHA256, storedData)).Write(storedStream)
			return err
		case late:
			_, err := io.WriteString(w, "raw")
			if err == nil {
				_, err = zr.Zstd(1, checksum.Sum{}).Write(storedStream)
			}
			return err
		}
		data, ok := files[name]
		if !ok {
			return fmt.Errorf("%s: %w", name, guest.ErrNoSuchWAL)
		}
		_, err := io.WriteString(w, data)
		return err
	}
	want := guest.RecoveryResult{Promoted: true, Timeline: 2, Fetched: 3}
	var got map[string]string
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Whether it returns or fails a require, the host's side must not
		// wait on it for ever.
		defer rtIn.Close()
		defer rtOut.CloseWithError(errors.New("the fake runtime stopped"))
		got = fakeRecoveringRuntime(t, proto.NewReader(rtIn), proto.NewWriter(rtOut), names, held, want)
	}()
	res, err := rt.Recover(context.Background(), guest.RecoveryConfig{DataDir: "/restored"}, fetch)
	<-done
	require.NoError(t, err)
	assert.Equal(t, want, res)
	assert.Equal(t, len(names), most, "the fetches ran in parallel")
	for n, data := range files {
		assert.Equal(t, data, got[n], n)
	}
	assert.Equal(t, string(storedData), got[stored], "the stored stream went as it was, with its size and checksum")
	assert.Equal(t, "error ", got[late], "a stream after raw bytes is refused")
	assert.Equal(t, "error ", got[oldSum], "a stream with a SHA-256 is refused")
	assert.Equal(t, "error no_such_wal", got["000000010000000000000009"])
	assert.Equal(t, "error ", got[held], "the cancelled fetch ended with its error")
}

// A failed recovery's error crosses the link whole: PostgreSQL's report of
// several lines (DETAIL, HINT) as the runtime wrote it, matching its
// sentinel, with the result the runtime still sent.
func TestRecoverFailureCrossesWhole(t *testing.T) {
	hostIn, rtOut := io.Pipe()
	rtIn, hostOut := io.Pipe()
	rt := &Runtime{w: proto.NewWriter(hostOut), r: proto.NewReader(hostIn), stop: func(context.Context) error { return nil }}
	report := "recover /restored: postgresql stopped during recovery: 2026-11-25 08:00:00.400 UTC [12] PANIC:  unexpected directory entry \"16436\" found in pg_tblspc/\n" +
		"DETAIL:  All directory entries in pg_tblspc/ should be symbolic links.\n" +
		"HINT:  Remove those directories, or set allow_in_place_tablespaces to ON transiently to let recovery complete."
	want := guest.RecoveryResult{Requests: 3, Log: "the server's log"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer rtIn.Close()
		defer rtOut.CloseWithError(errors.New("the fake runtime stopped"))
		r, w := proto.NewReader(rtIn), proto.NewWriter(rtOut)
		var req proto.Request
		if err := r.ReadJSON(proto.TypeRequest, &req); err != nil {
			t.Error(err)
			return
		}
		b, _ := json.Marshal(want)
		if err := w.WriteJSON(proto.TypeResponse, proto.Response{ID: req.ID, Result: b, Error: report,
			Code: runtime.ErrorCode(guest.ErrRecoveryFailed)}); err != nil {
			t.Error(err)
		}
	}()
	res, err := rt.Recover(context.Background(), guest.RecoveryConfig{DataDir: "/restored"},
		func(context.Context, string, io.Writer) error { return nil })
	<-done
	require.ErrorIs(t, err, guest.ErrRecoveryFailed)
	assert.Equal(t, report, err.Error())
	assert.Equal(t, want, res)
}
