package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Calls the runtime makes to the host during OpRecover (proto.Call.Op).
const (
	// CallFetch asks for a WAL file: FetchCallArgs; the answer is the
	// file, zstd-compressed (by the host, or as the repository stores it;
	// a window of at most guest.MaxZstdWindow), in CallData frames, and a
	// CallEnd with the size and XXH3 of the raw bytes, or with the
	// error (code "no_such_wal" when the archive does not hold it).
	CallFetch = "fetch"
	// CallCancel withdraws a fetch: CancelCallArgs. Its CallEnd still
	// comes; no answer comes to the cancel itself.
	CallCancel = "cancel"
	// CallEnd ends the calls of the operation; the host answers it with a
	// CallEnd of its own once it has answered every other call.
	CallEnd = "end"
)

// FetchCallArgs names the WAL file a CallFetch asks for.
type FetchCallArgs struct {
	Name string `json:"name"`
}

// CancelCallArgs names the call a CallCancel withdraws.
type CancelCallArgs struct {
	ID uint64 `json:"id"`
}

// hostCalls makes calls to the host while the host's request is in
// progress: one goroutine reads every frame the host sends meanwhile and
// hands each call's data to the goroutine that made it.
type hostCalls struct {
	w   *proto.Writer
	wmu sync.Mutex // calls are made from several goroutines

	mu    sync.Mutex
	next  uint64
	calls map[uint64]*hostCall
	endID uint64
	err   error         // the host's stream failed: every call fails with it
	done  chan struct{} // closed when the reader has returned
}

// hostCall is a call waiting for its answer.
type hostCall struct {
	pw  *io.PipeWriter // the answer's data, to the caller
	end proto.CallEnd  // set before pw is closed
}

// startHostCalls starts reading the host's frames from r. broken is called
// if the stream fails (the operation cannot go on). finish must be called
// before anything else reads r.
func startHostCalls(r *proto.Reader, w *proto.Writer, broken func()) *hostCalls {
	c := &hostCalls{w: w, calls: map[uint64]*hostCall{}, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		if err := c.read(r); err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("host connection: %w", err)
			for id, call := range c.calls {
				call.pw.CloseWithError(c.err)
				delete(c.calls, id)
			}
			c.mu.Unlock()
			broken()
		}
	}()
	return c
}

// read dispatches the host's frames until the answer to the end call.
func (c *hostCalls) read(r *proto.Reader) error {
	for {
		typ, p, err := r.Read()
		if err != nil {
			return err
		}
		switch typ {
		case proto.TypeCallData:
			id, data, err := proto.CallData(p)
			if err != nil {
				return err
			}
			c.mu.Lock()
			call := c.calls[id]
			c.mu.Unlock()
			if call != nil {
				// An error means the caller gave up; the rest is dropped.
				_, _ = call.pw.Write(data)
			}
		case proto.TypeCallEnd:
			var end proto.CallEnd
			if err := proto.DecodeJSON(p, &end); err != nil {
				return err
			}
			c.mu.Lock()
			if end.ID == c.endID && end.ID != 0 {
				c.mu.Unlock()
				return nil
			}
			call := c.calls[end.ID]
			delete(c.calls, end.ID)
			if call != nil {
				call.end = end
			}
			c.mu.Unlock()
			if call != nil {
				call.pw.Close()
			}
		default:
			return fmt.Errorf("%w: frame type %d while answering calls", proto.ErrProtocol, typ)
		}
	}
}

func (c *hostCalls) send(call proto.Call) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.WriteJSON(proto.TypeCall, call)
}

// register adds a call and returns its id.
func (c *hostCalls) register(call *hostCall) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.endID != 0 {
		return 0, errors.New("calls to the host have ended")
	}
	c.next++
	if call != nil {
		c.calls[c.next] = call
	}
	return c.next, nil
}

// Fetch is a guest.FetchFunc that asks the host. The answer is
// decompressed into w and checked against the size and checksum the host
// sent before Fetch returns nil.
func (c *hostCalls) Fetch(ctx context.Context, name string, w io.Writer) error {
	pr, pw := io.Pipe()
	call := &hostCall{pw: pw}
	id, err := c.register(call)
	if err != nil {
		return fmt.Errorf("fetch %s from the host: %w", name, err)
	}
	args, _ := json.Marshal(FetchCallArgs{Name: name}) // a string always encodes
	if err := c.send(proto.Call{ID: id, Op: CallFetch, Args: args}); err != nil {
		return fmt.Errorf("fetch %s from the host: %w", name, err)
	}
	canceled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(canceled)
		pw.CloseWithError(ctx.Err())
		cancel, _ := json.Marshal(CancelCallArgs{ID: id})
		if cid, err := c.register(nil); err == nil {
			_ = c.send(proto.Call{ID: cid, Op: CallCancel, Args: cancel})
		}
	})
	// A canceled fetch returns only once the host was told, so an end of
	// the calls that follows cannot overtake the cancel.
	defer func() {
		if !stop() {
			<-canceled
		}
	}()
	// Whatever happens here, the reader must never block on this call.
	defer pr.CloseWithError(errors.New("fetch abandoned"))
	// The stream may be the repository's own (guest.ZstdReceiver).
	dec, err := zpool.GetDecoder(pr)
	if err != nil {
		return err
	}
	defer zpool.PutDecoder(dec)
	// The host answers with XXH3 (guest.ZstdReceiver).
	sum := checksum.New(checksum.XXH3)
	n, err := io.Copy(io.MultiWriter(w, sum), dec)
	c.mu.Lock()
	end := call.end
	c.mu.Unlock()
	want, perr := checksum.Parse(end.Sum)
	if perr == nil && want.Algorithm != checksum.XXH3 {
		perr = fmt.Errorf("a %v checksum, not XXH3", want.Algorithm)
	}
	got := sum.Sum()
	switch {
	case end.Error != "":
		return fmt.Errorf("fetch %s from the host: %w", name, CodeError(end.Error, end.Code))
	case err != nil:
		return fmt.Errorf("fetch %s from the host: %w", name, err)
	case end.ID != id:
		return fmt.Errorf("fetch %s from the host: %w: the answer ended without a checksum", name, proto.ErrProtocol)
	case perr != nil:
		return fmt.Errorf("fetch %s from the host: %w: %v", name, proto.ErrProtocol, perr)
	case n != end.RawSize || got != want:
		return fmt.Errorf("fetch %s from the host: received %d bytes with checksum %v, the host sent %d bytes with %v",
			name, n, got, end.RawSize, want)
	}
	return nil
}

// finish ends the calls: it tells the host, waits until the host has
// answered every call and the reader has returned, and reports a failed
// stream. Fetches must have returned before. It waits without a context:
// until the reader has returned, nothing else may read the host's stream,
// and the host answers the end call at once or its stream ends.
func (c *hostCalls) finish() error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		<-c.done
		return c.err
	}
	c.next++
	c.endID = c.next
	id := c.endID
	c.mu.Unlock()
	if err := c.send(proto.Call{ID: id, Op: CallEnd}); err != nil {
		<-c.done // a stream that cannot be written ends for the reader too
		return fmt.Errorf("end calls to the host: %w", err)
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
