// Package remote is the host's side of the runtime protocol: a
// guest.Runtime that talks to a runtime component over any pair of streams
// (an SSH session's stdin and stdout, a child process's pipes). The
// deployers in guest/ssh and guest/local start the component and hand its
// streams here.
package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/repository/checksum"
)

var (
	_ guest.Runtime        = (*Runtime)(nil)
	_ guest.BackupMode     = (*Runtime)(nil)
	_ guest.SpaceReporter  = (*Runtime)(nil)
	_ guest.ServerControl  = (*Runtime)(nil)
	_ guest.DataFiles      = (*Runtime)(nil)
	_ guest.DirectShipper  = (*Runtime)(nil)
	_ guest.BundleStreamer = (*Runtime)(nil)
)

// Runtime is a connected runtime component.
type Runtime struct {
	w      *proto.Writer
	r      *proto.Reader
	stop   func(context.Context) error // ends the transport and waits for it
	arch   string
	mu     sync.Mutex // one call at a time on the streams
	nextID uint64
	closed bool
	broken error // set when the stream can no longer be trusted
}

// Open shakes hands with the component on the streams, tells it how to
// reach PostgreSQL (init: the deployer's connection settings and the
// Target's instance), and returns the Runtime. stop must end the transport
// (kill the process, close the session) and wait for it; it is called by
// Close, and also to unblock a call whose context ends. On error, stop has
// been called.
func Open(ctx context.Context, in io.Reader, out io.Writer, stop func(context.Context) error, init runtime.InitArgs) (*Runtime, error) {
	rt := &Runtime{w: proto.NewWriter(out), r: proto.NewReader(in), stop: stop}
	err := rt.guard(ctx, func() error {
		hello, err := proto.Handshake(rt.w, rt.r, proto.Hello{Role: "host"}, "runtime")
		rt.arch = hello.Arch
		return err
	})
	if err == nil {
		err = rt.call(ctx, runtime.OpInit, init, nil)
	}
	if err != nil {
		stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("start runtime: %w", err)
	}
	return rt, nil
}

// Arch is the GOOS/GOARCH the component reported.
func (rt *Runtime) Arch() string { return rt.arch }

// guard runs fn, ending the transport if ctx ends first so blocked reads
// and writes return.
func (rt *Runtime) guard(ctx context.Context, fn func() error) error {
	stopped := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		defer close(stopped)
		rt.stop(context.WithoutCancel(ctx))
	})
	err := fn()
	if !cancel() {
		<-stopped
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return err
}

func (rt *Runtime) lock() error {
	rt.mu.Lock()
	switch {
	case rt.closed:
		rt.mu.Unlock()
		return guest.ErrClosed
	case rt.broken != nil:
		err := rt.broken
		rt.mu.Unlock()
		return err
	}
	return nil
}

// call sends one request and reads its response into result. onFrame, if
// set, gets frames that arrive before the response.
func (rt *Runtime) call(ctx context.Context, op string, args, result any) error {
	return rt.callFrames(ctx, op, args, result, nil)
}

func (rt *Runtime) callFrames(ctx context.Context, op string, args, result any, onFrame func(proto.Type, []byte) error) error {
	return rt.guard(ctx, func() error {
		rt.nextID++
		req := proto.Request{ID: rt.nextID, Op: op}
		if args != nil {
			b, err := json.Marshal(args)
			if err != nil {
				return err
			}
			req.Args = b
		}
		if err := rt.w.WriteJSON(proto.TypeRequest, req); err != nil {
			return rt.fail(err)
		}
		for {
			typ, p, err := rt.r.Read()
			if err != nil {
				return rt.fail(err)
			}
			if typ != proto.TypeResponse {
				if onFrame == nil {
					return rt.fail(fmt.Errorf("%w: unexpected frame type %d", proto.ErrProtocol, typ))
				}
				if err := onFrame(typ, p); err != nil {
					return err
				}
				continue
			}
			var resp proto.Response
			if err := proto.DecodeJSON(p, &resp); err != nil {
				return rt.fail(err)
			}
			if resp.ID != req.ID {
				return rt.fail(fmt.Errorf("%w: response %d to request %d", proto.ErrProtocol, resp.ID, req.ID))
			}
			if resp.Error != "" {
				if result != nil && resp.Result != nil {
					_ = json.Unmarshal(resp.Result, result) // what a failed operation still reports
				}
				return runtime.CodeError(resp.Error, resp.Code)
			}
			if result != nil && resp.Result != nil {
				return json.Unmarshal(resp.Result, result)
			}
			return nil
		}
	})
}

// fail marks the stream broken: after a transport or protocol error the
// next frame cannot be trusted to belong to the next request.
func (rt *Runtime) fail(err error) error {
	rt.broken = fmt.Errorf("runtime connection broken: %w", err)
	return rt.broken
}

// Scan implements guest.Runtime.
func (rt *Runtime) Scan(ctx context.Context) (guest.Instance, error) {
	if err := rt.lock(); err != nil {
		return guest.Instance{}, err
	}
	defer rt.mu.Unlock()
	var inst guest.Instance
	err := rt.call(ctx, runtime.OpScan, nil, &inst)
	return inst, err
}

// PrepareArchive implements guest.Runtime.
func (rt *Runtime) PrepareArchive(ctx context.Context, cfg guest.ArchiveConfig) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpPrepare, cfg, nil)
}

// Ready implements guest.Runtime.
func (rt *Runtime) Ready(ctx context.Context) ([]guest.File, error) {
	if err := rt.lock(); err != nil {
		return nil, err
	}
	defer rt.mu.Unlock()
	var files []guest.File
	err := rt.call(ctx, runtime.OpReady, nil, &files)
	return files, err
}

// Remove implements guest.Runtime.
func (rt *Runtime) Remove(ctx context.Context, names []string) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpRemove, runtime.NamesArgs{Names: names}, nil)
}

// FolderSpace implements guest.SpaceReporter.
func (rt *Runtime) FolderSpace(ctx context.Context) (guest.Space, error) {
	if err := rt.lock(); err != nil {
		return guest.Space{}, err
	}
	defer rt.mu.Unlock()
	var sp guest.Space
	err := rt.call(ctx, runtime.OpSpace, nil, &sp)
	return sp, err
}

// StartBackup implements guest.BackupMode.
func (rt *Runtime) StartBackup(ctx context.Context, label string) (guest.BackupStart, error) {
	if err := rt.lock(); err != nil {
		return guest.BackupStart{}, err
	}
	defer rt.mu.Unlock()
	var out guest.BackupStart
	err := rt.call(ctx, runtime.OpBackupStart, runtime.BackupArgs{Label: label}, &out)
	return out, err
}

// StopBackup implements guest.BackupMode.
func (rt *Runtime) StopBackup(ctx context.Context) (guest.BackupStop, error) {
	if err := rt.lock(); err != nil {
		return guest.BackupStop{}, err
	}
	defer rt.mu.Unlock()
	var out guest.BackupStop
	err := rt.call(ctx, runtime.OpBackupStop, nil, &out)
	return out, err
}

// CheckServer implements guest.ServerControl.
func (rt *Runtime) CheckServer(ctx context.Context, cfg guest.CheckConfig) (guest.CheckResult, error) {
	if err := rt.lock(); err != nil {
		return guest.CheckResult{}, err
	}
	defer rt.mu.Unlock()
	var out guest.CheckResult
	err := rt.call(ctx, runtime.OpCheckServer, cfg, &out)
	return out, err
}

// CheckRelease implements guest.ReleaseChecker.
func (rt *Runtime) CheckRelease(ctx context.Context, major int, binDir string) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpCheckRelease, runtime.CheckReleaseArgs{Major: major, BinDir: binDir}, nil)
}

// Dump implements guest.Dumper.
func (rt *Runtime) Dump(ctx context.Context, cfg guest.DumpConfig) (guest.DumpResult, error) {
	if err := rt.lock(); err != nil {
		return guest.DumpResult{}, err
	}
	defer rt.mu.Unlock()
	var out guest.DumpResult
	err := rt.call(ctx, runtime.OpDump, cfg, &out)
	return out, err
}

// Clusters implements guest.ClusterLister.
func (rt *Runtime) Clusters(ctx context.Context) ([]guest.Cluster, error) {
	if err := rt.lock(); err != nil {
		return nil, err
	}
	defer rt.mu.Unlock()
	var out []guest.Cluster
	if err := rt.call(ctx, runtime.OpClusters, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// StopServer implements guest.ServerControl.
func (rt *Runtime) StopServer(ctx context.Context, dataDir string) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpStopServer, runtime.StopServerArgs{DataDir: dataDir}, nil)
}

// Read implements guest.Runtime.
func (rt *Runtime) Read(ctx context.Context, names []string, fn func(guest.Frame) error) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.readFiles(ctx, runtime.OpRead, runtime.NamesArgs{Names: names}, nil, fn)
}

// readFiles calls op, handing each streamed file to fn. After an error
// from fn the rest of the stream is drained and that error returned.
func (rt *Runtime) readFiles(ctx context.Context, op string, args, result any, fn func(guest.Frame) error) error {
	var fnErr error
	err := rt.callFrames(ctx, op, args, result, func(typ proto.Type, p []byte) error {
		if typ != proto.TypeFileStart {
			return rt.fail(fmt.Errorf("%w: frame type %d outside a file", proto.ErrProtocol, typ))
		}
		var start proto.FileStart
		if err := proto.DecodeJSON(p, &start); err != nil {
			return rt.fail(fmt.Errorf("%w: bad file start", proto.ErrProtocol))
		}
		cur := &fileReader{rt: rt, name: start.Name}
		if fnErr == nil {
			fnErr = fn(guest.Frame{Name: start.Name, Codec: guest.Codec(start.Codec), Data: cur, Checksum: cur.checksum})
		}
		// Whatever the callback left unread is drained to stay in step.
		return cur.drain()
	})
	if err != nil {
		return err
	}
	return fnErr
}

// ListDataFiles implements guest.DataFiles.
func (rt *Runtime) ListDataFiles(ctx context.Context, opts guest.DataListOptions) ([]guest.DataFile, error) {
	if err := rt.lock(); err != nil {
		return nil, err
	}
	defer rt.mu.Unlock()
	var files []guest.DataFile
	err := rt.callFrames(ctx, runtime.OpDataList, opts, nil, func(typ proto.Type, p []byte) error {
		if typ != proto.TypeResultPart {
			return rt.fail(fmt.Errorf("%w: frame type %d in a listing", proto.ErrProtocol, typ))
		}
		var part []guest.DataFile
		if err := proto.DecodeJSON(p, &part); err != nil {
			return rt.fail(err)
		}
		files = append(files, part...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// maxPathsRequest bounds the JSON of the paths one data_read request
// carries, well below proto.MaxControl; longer lists take several requests.
const maxPathsRequest = 256 << 10

// ReadDataFiles implements guest.DataFiles. A long list of paths is sent
// as several requests; after an error from fn no further request is made.
func (rt *Runtime) ReadDataFiles(ctx context.Context, paths []string, fn func(guest.Frame) error) ([]string, error) {
	if err := rt.lock(); err != nil {
		return nil, err
	}
	defer rt.mu.Unlock()
	vanished := []string{}
	for _, batch := range splitPaths(paths, maxPathsRequest) {
		var res runtime.DataReadResult
		if err := rt.readFiles(ctx, runtime.OpDataRead, runtime.PathsArgs{Paths: batch}, &res, fn); err != nil {
			return nil, err
		}
		vanished = append(vanished, res.Vanished...)
	}
	return vanished, nil
}

// splitPaths cuts paths into runs whose JSON takes at most limit bytes
// each (a path longer than limit gets a run of its own).
func splitPaths(paths []string, limit int) [][]string {
	var out [][]string
	start, size := 0, 0
	for i, p := range paths {
		b, _ := json.Marshal(p) // a string always encodes
		n := len(b) + 1         // and a comma
		if i > start && size+n > limit {
			out = append(out, paths[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(paths) {
		out = append(out, paths[start:])
	}
	return out
}

// fileReader yields a streamed file's Data frames up to its FileEnd.
type fileReader struct {
	rt   *Runtime
	name string
	buf  []byte
	end  *proto.FileEnd
	sum  checksum.Sum
	err  error
}

func (f *fileReader) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if f.end != nil {
			return 0, io.EOF
		}
		if f.err != nil {
			return 0, f.err
		}
		typ, data, err := f.rt.r.Read()
		switch {
		case err != nil:
			f.err = f.rt.fail(err)
		case typ == proto.TypeData:
			f.buf = append(f.buf[:0], data...)
		case typ == proto.TypeFileEnd:
			var end proto.FileEnd
			herr := proto.DecodeJSON(data, &end)
			if herr == nil {
				f.sum, herr = checksum.Parse(end.Sum)
			}
			if herr != nil || end.Name != f.name {
				f.err = f.rt.fail(fmt.Errorf("%w: bad file end for %s", proto.ErrProtocol, f.name))
				continue
			}
			f.end = &end
		case typ == proto.TypeResponse:
			// The guest gave up on the file midway and said why.
			var resp proto.Response
			_ = proto.DecodeJSON(data, &resp)
			f.err = f.rt.fail(fmt.Errorf("guest stopped sending %s: %s", f.name, resp.Error))
		default:
			f.err = f.rt.fail(fmt.Errorf("%w: %s cut short by a frame of type %d", proto.ErrProtocol, f.name, typ))
		}
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

func (f *fileReader) drain() error {
	_, err := io.Copy(io.Discard, f)
	return err
}

func (f *fileReader) checksum() (int64, checksum.Sum) {
	if f.end == nil {
		return -1, checksum.Sum{}
	}
	return f.end.RawSize, f.sum
}

// Close implements guest.Runtime: it asks the component to end, then stops
// the transport and waits. Idempotent.
func (rt *Runtime) Close(ctx context.Context) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return nil
	}
	rt.closed = true
	if rt.broken == nil {
		_ = rt.call(ctx, runtime.OpClose, nil, nil) // best effort: stop ends it anyway
	}
	return rt.stop(ctx)
}

// LogLines logs each line the component writes to stderr, until r ends.
// Deployers run it on the component's stderr.
func LogLines(r io.Reader, logger *slog.Logger) {
	buf := make([]byte, 4096)
	var line []byte
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c == '\n' {
				logger.Info(string(line))
				line = line[:0]
			} else if len(line) < 4096 {
				line = append(line, c)
			}
		}
		if err != nil {
			if len(line) > 0 {
				logger.Info(string(line))
			}
			return
		}
	}
}

// StageBundle implements guest.DirectShipper.
func (rt *Runtime) StageBundle(ctx context.Context, req guest.StageRequest) (guest.Staged, error) {
	if err := rt.lock(); err != nil {
		return guest.Staged{}, err
	}
	defer rt.mu.Unlock()
	var out guest.Staged
	err := rt.call(ctx, runtime.OpStage, req, &out)
	return out, err
}

// SendBundle implements guest.DirectShipper.
func (rt *Runtime) SendBundle(ctx context.Context, object string, to guest.Destination) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpSend, runtime.SendArgs{Object: object, To: to}, nil)
}

// DropBundle implements guest.DirectShipper.
func (rt *Runtime) DropBundle(ctx context.Context, object string) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpDrop, runtime.DropArgs{Object: object}, nil)
}

// ProbeDestination implements guest.DirectShipper.
func (rt *Runtime) ProbeDestination(ctx context.Context, to guest.Destination) error {
	if err := rt.lock(); err != nil {
		return err
	}
	defer rt.mu.Unlock()
	return rt.call(ctx, runtime.OpProbe, to, nil)
}

// StreamBundle implements guest.BundleStreamer.
func (rt *Runtime) StreamBundle(ctx context.Context, req guest.StageRequest, fn func(io.Reader) error) (guest.Staged, error) {
	if err := rt.lock(); err != nil {
		return guest.Staged{}, err
	}
	defer rt.mu.Unlock()
	var out guest.Staged
	err := rt.readFiles(ctx, runtime.OpStream, req, &out, func(f guest.Frame) error {
		if f.Name != req.Object || f.Codec != guest.CodecNone {
			return fmt.Errorf("%w: streamed %s (%s), not the bundle %s", proto.ErrProtocol, f.Name, f.Codec, req.Object)
		}
		return fn(f.Data)
	})
	return out, err
}
