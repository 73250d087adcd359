// Package proto is the wire protocol between the host (a guest.Deployer's
// handle) and the runtime component in the guest, carried over the SSH
// session's stdin and stdout or a child process's pipes.
//
// Every message is one frame: a 4-byte big-endian length of what follows,
// a 1-byte type, and the payload. Control messages carry JSON; file data
// travels as raw Data frames of at most MaxData bytes between a FileStart
// and a FileEnd, so neither side ever holds a whole WAL file. A result too
// large for one Response (a listing of a cluster's files) travels as
// ResultPart frames, each a JSON array, before the Response that ends it;
// they are sent only for operations that say so, so a peer that predates
// them never sees one.
//
// During an operation that says it takes calls (the runtime's recover),
// the runtime may ask the host things in turn: Call frames runtime to
// host, answered by CallData frames (tagged with the call's id, so answers
// to calls made in parallel interleave) and one CallEnd each. The runtime
// ends that phase with an "end" call, which the host answers last, after
// every other call; then the operation's Response follows.
//
// The first exchange is Hello both ways: each side states the protocol
// version it speaks and refuses a version it does not know.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version this package speaks.
// 2: a destination may name a log shipping server (guest.Destination.Via),
// which a runtime of version 1 would ignore and connect directly.
// 3: checksums travel as "<algorithm>:<hex>" in a "sum" field (FileEnd,
// CallEnd, staged bundles and their files), WAL's in XXH3, and a stage
// request names the algorithm of its bundle's; version 2 sent SHA-256
// hex as "sha256".
const Version = 3

// Limits that bound what a peer can make the other allocate.
const (
	MaxData    = 1 << 20         // payload of a Data frame
	MaxControl = 1 << 20         // JSON payload of a control frame
	maxFrame   = MaxData + 1 + 4 // type byte plus slack
)

// Type is a frame's type.
type Type uint8

const (
	TypeHello     Type = 1 // JSON Hello
	TypeRequest   Type = 2 // JSON Request
	TypeResponse  Type = 3 // JSON Response
	TypeFileStart Type = 4 // JSON FileStart
	TypeData      Type = 5 // raw bytes
	TypeFileEnd   Type = 6 // JSON FileEnd
	// TypeResultPart is a JSON array, part of the result of the request
	// being answered; it precedes the Response.
	TypeResultPart Type = 7
	// TypeCall is a JSON Call, from the runtime to the host during an
	// operation that takes calls.
	TypeCall Type = 8
	// TypeCallData is part of the answer to a call: the call's id as 8
	// bytes big-endian, then raw bytes (see WriteCallData).
	TypeCallData Type = 9
	// TypeCallEnd is a JSON CallEnd: the answer to a call is complete, or
	// the call failed.
	TypeCallEnd Type = 10
)

func (t Type) valid() bool { return t >= TypeHello && t <= TypeCallEnd }

// ErrProtocol is returned (wrapped) for any frame that breaks the protocol.
var ErrProtocol = errors.New("runtime protocol error")

// Hello opens a session in each direction.
type Hello struct {
	Version int    `json:"version"`
	Role    string `json:"role"`           // "host" or "runtime"
	Arch    string `json:"arch,omitempty"` // runtime: GOOS/GOARCH it runs on
}

// Request asks the runtime to do one thing. Op names it; Args are its
// JSON-encoded arguments.
type Request struct {
	ID   uint64          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response answers the Request with the same ID: a result or an error.
// Code carries a sentinel the host maps back to a Go error (see guest).
type Response struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Code   string          `json:"code,omitempty"`
}

// FileStart begins a streamed file.
type FileStart struct {
	Name  string `json:"name"`
	Codec string `json:"codec"` // "zstd" or "none"
}

// FileEnd ends a streamed file with what the runtime computed over the raw
// bytes it read: their size and checksum ("<algorithm>:<hex>", as
// repository/checksum writes it).
type FileEnd struct {
	Name    string `json:"name"`
	RawSize int64  `json:"raw_size"`
	Sum     string `json:"sum"`
}

// Call is a request from the runtime to the host, made while the host's
// request is in progress. Its answer is zero or more CallData frames and
// one CallEnd with the same ID.
type Call struct {
	ID   uint64          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// CallEnd completes the answer to a Call: on success RawSize and Sum (as
// in FileEnd) describe the raw bytes the CallData frames carried (before
// their codec);
// on failure Error says why and Code may name a sentinel.
type CallEnd struct {
	ID      uint64 `json:"id"`
	RawSize int64  `json:"raw_size,omitempty"`
	Sum     string `json:"sum,omitempty"`
	Error   string `json:"error,omitempty"`
	Code    string `json:"code,omitempty"`
}

// CallDataMax is the most data one CallData frame carries after its id.
const CallDataMax = MaxData - 8

// Writer writes frames. It is not safe for concurrent use.
type Writer struct {
	w   io.Writer
	hdr [5]byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends one frame.
func (w *Writer) Write(t Type, payload []byte) error {
	if !t.valid() {
		return fmt.Errorf("%w: unknown frame type %d", ErrProtocol, t)
	}
	if limit(t) < len(payload) {
		return fmt.Errorf("%w: %d-byte payload over the %d-byte limit of type %d", ErrProtocol, len(payload), limit(t), t)
	}
	binary.BigEndian.PutUint32(w.hdr[:4], uint32(len(payload)+1))
	w.hdr[4] = byte(t)
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return err
	}
	_, err := w.w.Write(payload)
	return err
}

// WriteCallData sends p, at most CallDataMax bytes, as a CallData frame of
// call id.
func (w *Writer) WriteCallData(id uint64, p []byte) error {
	if len(p) > CallDataMax {
		return fmt.Errorf("%w: %d bytes of call data over the limit of %d", ErrProtocol, len(p), CallDataMax)
	}
	var hdr [13]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(p)+9))
	hdr[4] = byte(TypeCallData)
	binary.BigEndian.PutUint64(hdr[5:], id)
	if _, err := w.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.w.Write(p)
	return err
}

// CallData splits the payload of a CallData frame into the call's id and
// its data.
func CallData(payload []byte) (uint64, []byte, error) {
	if len(payload) < 8 {
		return 0, nil, fmt.Errorf("%w: call data of %d bytes has no call id", ErrProtocol, len(payload))
	}
	return binary.BigEndian.Uint64(payload[:8]), payload[8:], nil
}

// WriteJSON sends v as a control frame.
func (w *Writer) WriteJSON(t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.Write(t, b)
}

func limit(t Type) int {
	if t == TypeData || t == TypeCallData {
		return MaxData
	}
	return MaxControl
}

// Reader reads frames, reusing one buffer: a payload is valid until the
// next Read. It is not safe for concurrent use.
type Reader struct {
	r   io.Reader
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Read returns the next frame. io.EOF means the peer closed cleanly
// between frames; a frame cut short is io.ErrUnexpectedEOF.
func (r *Reader) Read() (Type, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r.r, hdr[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 || n > maxFrame {
		return 0, nil, fmt.Errorf("%w: frame length %d", ErrProtocol, n)
	}
	if _, err := io.ReadFull(r.r, hdr[4:]); err != nil {
		return 0, nil, unexpected(err)
	}
	t := Type(hdr[4])
	if !t.valid() {
		return 0, nil, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, t)
	}
	size := int(n) - 1
	if size > limit(t) {
		return 0, nil, fmt.Errorf("%w: %d-byte payload over the limit of type %d", ErrProtocol, size, t)
	}
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:size]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return 0, nil, unexpected(err)
	}
	return t, r.buf, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Chunker cuts a byte stream into pieces of at most a fixed size, so
// each fits a frame: every full piece, and what is left at Flush, goes to
// send, which may keep it only until it returns. Not safe for concurrent
// use.
type Chunker struct {
	buf  []byte
	send func([]byte) error
}

// NewChunker returns a Chunker of pieces of at most size bytes.
func NewChunker(size int, send func([]byte) error) *Chunker {
	return &Chunker{buf: make([]byte, 0, size), send: send}
}

// Write implements io.Writer.
func (c *Chunker) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+k]
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return total, nil
}

// Flush sends what is buffered, if anything.
func (c *Chunker) Flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.send(c.buf)
	c.buf = c.buf[:0]
	return err
}

// ReadJSON reads the next frame, which must be of type want, into v.
// Unknown fields are allowed, so a newer peer may add some.
func (r *Reader) ReadJSON(want Type, v any) error {
	t, p, err := r.Read()
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("%w: got frame type %d, want %d", ErrProtocol, t, want)
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("%w: type %d: %v", ErrProtocol, t, err)
	}
	return nil
}

// DecodeJSON decodes a control payload already read with Reader.Read.
func DecodeJSON(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return nil
}

// Handshake sends our Hello and reads the peer's, checking its version and
// role. The writes and reads are on different streams, so sending first
// cannot deadlock.
func Handshake(w *Writer, r *Reader, me Hello, peerRole string) (Hello, error) {
	me.Version = Version
	if err := w.WriteJSON(TypeHello, me); err != nil {
		return Hello{}, fmt.Errorf("send hello: %w", err)
	}
	var peer Hello
	if err := r.ReadJSON(TypeHello, &peer); err != nil {
		return Hello{}, fmt.Errorf("read hello: %w", err)
	}
	switch {
	case peer.Version != Version:
		return peer, fmt.Errorf("%w: peer speaks version %d, this side %d", ErrProtocol, peer.Version, Version)
	case peer.Role != peerRole:
		return peer, fmt.Errorf("%w: peer says it is %q, want %q", ErrProtocol, peer.Role, peerRole)
	}
	return peer, nil
}
