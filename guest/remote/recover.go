package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

var _ guest.Recoverer = (*Runtime)(nil)

// maxCalls bounds the fetches the host runs at once for one recovery; the
// runtime asks for far fewer (its prefetch window plus one).
const maxCalls = 64

// Recover implements guest.Recoverer. While the guest recovers, each file
// it asks for is fetched with fetch, in parallel with the others, and
// streamed back zstd-compressed with the XXH3 of its raw bytes. fetch
// must not be nil.
func (rt *Runtime) Recover(ctx context.Context, cfg guest.RecoveryConfig, fetch guest.FetchFunc) (guest.RecoveryResult, error) {
	if fetch == nil {
		return guest.RecoveryResult{}, errors.New("recover: no fetch function")
	}
	if err := rt.lock(); err != nil {
		return guest.RecoveryResult{}, err
	}
	defer rt.mu.Unlock()
	cs := &callServer{rt: rt, fetch: fetch, workers: map[uint64]context.CancelFunc{}}
	var res guest.RecoveryResult
	err := rt.callFrames(ctx, runtime.OpRecover, cfg, &res, func(typ proto.Type, p []byte) error {
		return cs.handle(ctx, typ, p)
	})
	cs.stop()
	return res, err
}

// callServer answers the calls the runtime makes during one operation.
// Frames go out from several goroutines, one file's CallData interleaved
// with another's.
type callServer struct {
	rt    *Runtime
	fetch guest.FetchFunc
	wmu   sync.Mutex // the writer is shared by the workers

	mu      sync.Mutex
	workers map[uint64]context.CancelFunc
	wg      sync.WaitGroup
}

// handle answers one frame the runtime sent before its response.
func (s *callServer) handle(ctx context.Context, typ proto.Type, p []byte) error {
	if typ != proto.TypeCall {
		return s.rt.fail(fmt.Errorf("%w: frame type %d during a recovery", proto.ErrProtocol, typ))
	}
	var c proto.Call
	if err := proto.DecodeJSON(p, &c); err != nil {
		return s.rt.fail(err)
	}
	switch c.Op {
	case runtime.CallFetch:
		var a runtime.FetchCallArgs
		err := json.Unmarshal(c.Args, &a)
		if err == nil {
			_, err = wal.ParseFileName(a.Name)
		}
		if err != nil {
			return s.end(proto.CallEnd{ID: c.ID, Error: fmt.Sprintf("fetch: %v", err)})
		}
		s.mu.Lock()
		if len(s.workers) >= maxCalls {
			s.mu.Unlock()
			return s.end(proto.CallEnd{ID: c.ID, Error: fmt.Sprintf("fetch %s: over %d fetches at once", a.Name, maxCalls)})
		}
		wctx, cancel := context.WithCancel(ctx)
		s.workers[c.ID] = cancel
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveFetch(wctx, c.ID, a.Name)
	case runtime.CallCancel:
		var a runtime.CancelCallArgs
		if json.Unmarshal(c.Args, &a) == nil {
			s.mu.Lock()
			if cancel := s.workers[a.ID]; cancel != nil {
				cancel()
			}
			s.mu.Unlock()
		}
	case runtime.CallEnd:
		s.stop()
		return s.end(proto.CallEnd{ID: c.ID})
	default:
		return s.end(proto.CallEnd{ID: c.ID, Error: fmt.Sprintf("unknown call %q", c.Op)})
	}
	return nil
}

// end sends a CallEnd. A write error means the stream is broken: the read
// of the response will say so.
func (s *callServer) end(e proto.CallEnd) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.rt.w.WriteJSON(proto.TypeCallEnd, e)
	return nil
}

// serveFetch fetches one file and streams it to the runtime: compressed
// here, or as the fetch function holds it compressed (fetchSink).
func (s *callServer) serveFetch(ctx context.Context, id uint64, name string) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		if cancel := s.workers[id]; cancel != nil {
			cancel()
			delete(s.workers, id)
		}
		s.mu.Unlock()
	}()
	cw := proto.NewChunker(proto.CallDataMax, func(b []byte) error {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		return s.rt.w.WriteCallData(id, b)
	})
	sink := &fetchSink{wire: cw}
	err := s.fetch(ctx, name, sink)
	end, cerr := sink.close()
	if err == nil {
		err = cerr
	}
	if err == nil {
		err = cw.Flush()
	}
	end.ID = id
	if err != nil {
		end = proto.CallEnd{ID: id, Error: err.Error(), Code: runtime.ErrorCode(err)}
	}
	_ = s.end(end)
}

// fetchSink is the writer a fetch function gets: raw bytes written to it
// are compressed for the wire and summed here; a zstd stream handed over
// through Zstd goes to the wire as it is, with the size and checksum the
// fetch function gave, which the runtime checks after decompressing.
type fetchSink struct {
	wire   io.Writer
	enc    *zstd.Encoder // made on the first raw write
	sum    checksum.Hash
	n      int64
	stored *proto.CallEnd // set by Zstd
}

var _ guest.ZstdReceiver = (*fetchSink)(nil)

// errZstdLate: Zstd was called after raw bytes, or twice.
var errZstdLate = errors.New("fetch: zstd stream announced after other content")

func (f *fetchSink) Write(p []byte) (int, error) {
	if f.stored != nil {
		return 0, errZstdLate
	}
	if f.enc == nil {
		f.enc, f.sum = zpool.GetEncoder(f.wire), checksum.New(checksum.XXH3)
	}
	n, err := f.enc.Write(p)
	f.sum.Write(p[:n])
	f.n += int64(n)
	return n, err
}

// Zstd implements guest.ZstdReceiver.
func (f *fetchSink) Zstd(rawSize int64, sum checksum.Sum) io.Writer {
	switch {
	case f.enc != nil || f.stored != nil:
		return failWriter{errZstdLate}
	case sum.Algorithm != checksum.XXH3:
		return failWriter{fmt.Errorf("fetch: a %v checksum; the runtime checks XXH3", sum.Algorithm)}
	}
	f.stored = &proto.CallEnd{RawSize: rawSize, Sum: sum.String()}
	return f.wire
}

// close ends the stream and returns the CallEnd of a file that arrived
// whole (without its ID).
func (f *fetchSink) close() (proto.CallEnd, error) {
	switch {
	case f.stored != nil:
		return *f.stored, nil
	case f.enc == nil: // an empty file
		f.enc, f.sum = zpool.GetEncoder(f.wire), checksum.New(checksum.XXH3)
	}
	err := f.enc.Close()
	zpool.PutEncoder(f.enc)
	return proto.CallEnd{RawSize: f.n, Sum: f.sum.Sum().String()}, err
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// stop cancels the fetches under way and waits for them. Idempotent.
func (s *callServer) stop() {
	s.mu.Lock()
	for _, cancel := range s.workers {
		cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
