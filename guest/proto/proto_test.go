package proto

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.WriteJSON(TypeRequest, Request{ID: 7, Op: "scan"}))
	data := bytes.Repeat([]byte{0xAB}, MaxData)
	require.NoError(t, w.Write(TypeData, data))
	require.NoError(t, w.WriteJSON(TypeFileEnd, FileEnd{Name: "000000010000000000000001", RawSize: 16 << 20, Sum: "ab"}))

	r := NewReader(&buf)
	var req Request
	require.NoError(t, r.ReadJSON(TypeRequest, &req))
	assert.Equal(t, Request{ID: 7, Op: "scan"}, req)
	typ, p, err := r.Read()
	require.NoError(t, err)
	assert.Equal(t, TypeData, typ)
	assert.True(t, bytes.Equal(data, p))
	var end FileEnd
	require.NoError(t, r.ReadJSON(TypeFileEnd, &end))
	assert.Equal(t, int64(16<<20), end.RawSize)
	_, _, err = r.Read()
	assert.Equal(t, io.EOF, err, "clean end between frames")
}

func TestRejects(t *testing.T) {
	w := NewWriter(io.Discard)
	require.ErrorIs(t, w.Write(TypeData, make([]byte, MaxData+1)), ErrProtocol)
	require.ErrorIs(t, w.Write(Type(99), nil), ErrProtocol)

	frame := func(n uint32, typ byte, payload []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		return append(append(b, typ), payload...)
	}
	tests := map[string][]byte{
		"zero length":   frame(0, 1, nil),
		"huge length":   frame(1<<31, 5, nil),
		"unknown type":  frame(1, 42, nil),
		"control limit": frame(MaxControl+2, byte(TypeRequest), nil),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(b)).Read()
			require.ErrorIs(t, err, ErrProtocol)
		})
	}
	_, _, err := NewReader(bytes.NewReader(frame(10, byte(TypeData), []byte("abc")))).Read()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "a frame cut short")
	var h Hello
	require.ErrorIs(t, NewReader(bytes.NewReader(frame(3, byte(TypeHello), []byte("{x")))).ReadJSON(TypeHello, &h), ErrProtocol)
	require.ErrorIs(t, NewReader(bytes.NewReader(frame(3, byte(TypeData), []byte("{}")))).ReadJSON(TypeHello, &h), ErrProtocol)
}

func TestHandshake(t *testing.T) {
	hostToRT, rtToHost := &bytes.Buffer{}, &bytes.Buffer{}
	// The runtime's hello is already waiting, as if sent concurrently.
	require.NoError(t, NewWriter(rtToHost).WriteJSON(TypeHello, Hello{Version: Version, Role: "runtime", Arch: "linux/amd64"}))
	peer, err := Handshake(NewWriter(hostToRT), NewReader(rtToHost), Hello{Role: "host"}, "runtime")
	require.NoError(t, err)
	assert.Equal(t, "linux/amd64", peer.Arch)
	var sent Hello
	require.NoError(t, NewReader(hostToRT).ReadJSON(TypeHello, &sent))
	assert.Equal(t, Hello{Version: Version, Role: "host"}, sent)

	old := &bytes.Buffer{}
	require.NoError(t, NewWriter(old).WriteJSON(TypeHello, Hello{Version: Version + 1, Role: "runtime"}))
	_, err = Handshake(NewWriter(io.Discard), NewReader(old), Hello{Role: "host"}, "runtime")
	require.ErrorIs(t, err, ErrProtocol)
	require.ErrorContains(t, err, "version")
}

// FuzzReader: whatever bytes arrive, the decoder returns frames within the
// limits or an error; it never panics or allocates past the limits.
func FuzzReader(f *testing.F) {
	var seed bytes.Buffer
	w := NewWriter(&seed)
	_ = w.WriteJSON(TypeHello, Hello{Version: 1, Role: "runtime"})
	_ = w.Write(TypeData, []byte("wal bytes"))
	_ = w.WriteJSON(TypeFileEnd, FileEnd{Name: "x", RawSize: 9})
	_ = w.Write(TypeResultPart, []byte(`[{"path":"PG_VERSION","size":3}]`))
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 1, 5})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for {
			typ, p, err := r.Read()
			if err != nil {
				return
			}
			require.True(t, typ.valid())
			require.LessOrEqual(t, len(p), limit(typ))
			var v map[string]any
			_ = r.ReadJSON(TypeHello, &v)
		}
	})
}

func TestCallFrames(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.WriteJSON(TypeCall, Call{ID: 3, Op: "fetch", Args: []byte(`{"name":"000000010000000000000001"}`)}))
	data := bytes.Repeat([]byte{0xCD}, CallDataMax)
	require.NoError(t, w.WriteCallData(3, data))
	require.NoError(t, w.WriteCallData(1<<40, nil))
	require.NoError(t, w.WriteJSON(TypeCallEnd, CallEnd{ID: 3, RawSize: 5, Sum: "ab"}))
	require.ErrorIs(t, w.WriteCallData(3, make([]byte, CallDataMax+1)), ErrProtocol)

	r := NewReader(&buf)
	var c Call
	require.NoError(t, r.ReadJSON(TypeCall, &c))
	assert.Equal(t, "fetch", c.Op)
	typ, p, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, TypeCallData, typ)
	id, got, err := CallData(p)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), id)
	assert.True(t, bytes.Equal(data, got))
	typ, p, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, TypeCallData, typ)
	id, got, err = CallData(p)
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<40), id)
	assert.Empty(t, got)
	var end CallEnd
	require.NoError(t, r.ReadJSON(TypeCallEnd, &end))
	assert.Equal(t, CallEnd{ID: 3, RawSize: 5, Sum: "ab"}, end)
	_, _, err = CallData([]byte{1, 2, 3})
	require.ErrorIs(t, err, ErrProtocol, "no room for the id")
}

func TestChunker(t *testing.T) {
	var pieces []string
	c := NewChunker(4, func(b []byte) error { pieces = append(pieces, string(b)); return nil })
	n, err := c.Write([]byte("abcdefghij"))
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	_, err = c.Write([]byte("kl"))
	require.NoError(t, err)
	require.NoError(t, c.Flush())
	require.NoError(t, c.Flush(), "nothing left")
	assert.Equal(t, []string{"abcd", "efgh", "ijkl"}, pieces)
}
