package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/wal"
)

// Operations of the protocol; their arguments and results are the JSON of
// the types below.
const (
	OpInit    = "init"    // InitArgs
	OpScan    = "scan"    // -> guest.Instance
	OpPrepare = "prepare" // guest.ArchiveConfig
	OpReady   = "ready"   // -> []guest.File
	OpRead    = "read"    // NamesArgs; file frames precede the response
	OpRemove  = "remove"  // NamesArgs
	OpClose   = "close"

	OpSpace       = "space"        // -> guest.Space
	OpBackupStart = "backup_start" // BackupArgs -> guest.BackupStart
	OpBackupStop  = "backup_stop"  // -> guest.BackupStop

	// OpDataList lists the cluster's files: guest.DataListOptions; the
	// entries arrive as ResultPart frames of []guest.DataFile before the
	// empty response.
	OpDataList = "data_list"
	// OpDataRead streams data files: PathsArgs; file frames precede the
	// response, a DataReadResult.
	OpDataRead = "data_read"
	// OpRecover runs an archive recovery: guest.RecoveryConfig ->
	// guest.RecoveryResult. It takes calls (see CallFetch): the runtime
	// asks the host for WAL files while it runs, and ends the calls before
	// the response.
	OpRecover = "recover"
	// OpCheckServer checks a server: guest.CheckConfig -> guest.CheckResult.
	OpCheckServer = "check_server"
	// OpStopServer stops a server: StopServerArgs.
	OpStopServer = "stop_server"
	// OpClusters lists the guest's clusters: -> []guest.Cluster.
	OpClusters = "clusters"
	// OpDump exports databases: guest.DumpConfig -> guest.DumpResult.
	OpDump = "dump"
	// OpCheckRelease checks the guest's binaries of a release:
	// CheckReleaseArgs.
	OpCheckRelease = "check_release"
)

// CheckReleaseArgs are OpCheckRelease's arguments.
type CheckReleaseArgs struct {
	Major  int    `json:"major"`
	BinDir string `json:"bin_dir,omitempty"`
}

// StopServerArgs names the data directory whose server OpStopServer stops.
type StopServerArgs struct {
	DataDir string `json:"data_dir"`
}

// dataListPart is how many entries one ResultPart of OpDataList carries:
// with paths of at most guest.MaxDataPath bytes it stays far below
// proto.MaxControl.
const dataListPart = 256

// PathsArgs names data files, relative to the data directory.
type PathsArgs struct {
	Paths []string `json:"paths"`
}

// DataReadResult ends OpDataRead: the requested files that no longer
// existed and were skipped.
type DataReadResult struct {
	Vanished []string `json:"vanished"`
}

// BackupArgs starts backup mode.
type BackupArgs struct {
	Label string `json:"label"`
}

// InitArgs is the first request: how to reach PostgreSQL. It travels over
// the session's pipe, never on a command line or in the environment, where
// other users of the guest could read the password.
type InitArgs struct {
	Conn ConnConfig `json:"conn"`
	// DataDir picks the instance by its data directory (guest.Target):
	// the runtime reaches it at the port and socket directory of its
	// postmaster.pid, with Conn's user and credentials, and checks that
	// the server it reached serves that directory. Empty: the one Conn
	// reaches.
	DataDir string `json:"data_dir,omitempty"`
}

// NamesArgs names files in the temporary folder.
type NamesArgs struct {
	Names []string `json:"names"`
}

// Error codes carry the guest package's sentinels across the wire.
var errorCodes = map[string]error{
	"postgres_too_old":      guest.ErrPostgresTooOld,
	"postgres_too_new":      guest.ErrPostgresTooNew,
	"wal_level":             guest.ErrWALLevel,
	"archive_mode_off":      guest.ErrArchiveModeOff,
	"archive_command_taken": guest.ErrArchiveCommandTaken,
	"temp_folder":           guest.ErrTempFolder,
	"bad_segment":           wal.ErrBadSegment,
	"unsafe_path":           guest.ErrUnsafePath,
	"no_such_wal":           guest.ErrNoSuchWAL,
	"server_running":        guest.ErrServerRunning,
	"target_not_reached":    guest.ErrTargetNotReached,
	"recovery_failed":       guest.ErrRecoveryFailed,
	"release_mismatch":      guest.ErrReleaseMismatch,
	"object_exists":         guest.ErrObjectExists,
	"upload_denied":         guest.ErrUploadDenied,
	"unreachable":           guest.ErrUnreachable,
	"host_key":              guest.ErrHostKey,
	"no_instance":           guest.ErrNoInstance,
	"no_pg_dump":            guest.ErrNoPgDump,
}

// ErrorCode returns the wire code for err, or "".
func ErrorCode(err error) string {
	for code, sentinel := range errorCodes {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	return ""
}

// CodeError returns the error a message and a wire code from the other
// side stand for: one that matches the code's sentinel (errors.Is), or a
// plain one for an unknown or empty code.
func CodeError(msg, code string) error {
	if sentinel := errorCodes[code]; sentinel != nil {
		return &codeError{msg: msg, sentinel: sentinel}
	}
	return errors.New(msg)
}

// codeError is an error from the other side that matches a sentinel.
type codeError struct {
	msg      string
	sentinel error
}

func (e *codeError) Error() string        { return e.msg }
func (e *codeError) Is(target error) bool { return target == e.sentinel }

// Serve speaks the runtime's side of the protocol on in and out until the
// host sends close or hangs up (io.EOF). newRuntime builds the Runtime once
// the host has said how to reach PostgreSQL.
func Serve(ctx context.Context, in io.Reader, out io.Writer, newRuntime func(ConnConfig) *Runtime) error {
	w, r := proto.NewWriter(out), proto.NewReader(in)
	if _, err := proto.Handshake(w, r, proto.Hello{Role: "runtime", Arch: goruntime.GOOS + "/" + goruntime.GOARCH}, "host"); err != nil {
		return err
	}
	s := &server{w: w, r: r, newRuntime: newRuntime}
	defer s.purge.wait()
	for {
		var req proto.Request
		if err := r.ReadJSON(proto.TypeRequest, &req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		result, err := s.handle(ctx, req)
		resp := proto.Response{ID: req.ID}
		if err != nil {
			resp.Error, resp.Code = err.Error(), ErrorCode(err)
		}
		// A failed recovery still reports what it did and the server's
		// log; other operations send no result with an error.
		if result != nil && (err == nil || req.Op == OpRecover) {
			if resp.Result, err = json.Marshal(result); err != nil {
				return err
			}
		}
		if err := w.WriteJSON(proto.TypeResponse, resp); err != nil {
			return err
		}
		if req.Op == OpClose {
			return nil
		}
	}
}

type server struct {
	w          *proto.Writer
	r          *proto.Reader
	newRuntime func(ConnConfig) *Runtime
	rt         *Runtime
	dir        string
	codec      guest.Codec // of the session's WAL (ArchiveConfig.Codec)
	inst       guest.Instance
	dataDir    string // found by the first data operation
	purge      purger // unlinks what remove moved out of dir
}

func (s *server) handle(ctx context.Context, req proto.Request) (any, error) {
	if req.Op != OpInit && req.Op != OpClose && s.rt == nil {
		return nil, errors.New("runtime not initialised")
	}
	switch req.Op {
	case OpInit:
		var a InitArgs
		if err := json.Unmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		if a.DataDir == "" {
			s.rt = s.newRuntime(a.Conn)
			return nil, nil
		}
		conn, err := InstanceConn(a.Conn, a.DataDir)
		if err != nil {
			return nil, err
		}
		rt := s.newRuntime(conn)
		if err := rt.checkDataDir(ctx, a.DataDir); err != nil {
			return nil, err
		}
		s.rt = rt
		return nil, nil
	case OpScan:
		conn, err := s.rt.connect(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		return Scan(ctx, conn)
	case OpPrepare:
		var cfg guest.ArchiveConfig
		if err := json.Unmarshal(req.Args, &cfg); err != nil {
			return nil, err
		}
		if err := s.rt.PrepareArchive(ctx, cfg); err != nil {
			return nil, err
		}
		conn, err := s.rt.connect(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if s.inst, err = Scan(ctx, conn); err != nil {
			return nil, err
		}
		s.dir, s.codec = cfg.Dir, cfg.Codec
		if s.codec == "" {
			s.codec = guest.CodecZstd
		}
		s.purge.start(ctx, s.dir) // what an earlier runtime left in .removed
		return nil, clearOutgoing(s.dir)
	case OpReady, OpSpace:
		if s.dir == "" {
			return nil, errors.New("archiving not prepared in this session")
		}
		if req.Op == OpSpace {
			return FolderSpace(s.dir)
		}
		return Ready(s.dir)
	case OpRead, OpRemove:
		if s.dir == "" {
			return nil, errors.New("archiving not prepared in this session")
		}
		var a NamesArgs
		if err := json.Unmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		for _, n := range a.Names {
			if _, err := wal.ParseFileName(n); err != nil {
				return nil, err // also keeps names from leaving the folder
			}
		}
		if req.Op == OpRead {
			return nil, s.read(a.Names)
		}
		return nil, s.remove(ctx, a.Names)
	case OpBackupStart:
		var a BackupArgs
		if err := json.Unmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		return s.rt.StartBackup(ctx, a.Label)
	case OpBackupStop:
		return s.rt.StopBackup(ctx)
	case OpDataList, OpDataRead:
		return s.data(ctx, req)
	case OpRecover:
		var cfg guest.RecoveryConfig
		if err := json.Unmarshal(req.Args, &cfg); err != nil {
			return nil, err
		}
		return s.recover(ctx, cfg)
	case OpCheckServer:
		var cfg guest.CheckConfig
		if err := json.Unmarshal(req.Args, &cfg); err != nil {
			return nil, err
		}
		return s.rt.CheckServer(ctx, cfg)
	case OpClusters:
		return FindClusters(ctx, "/proc", nil)
	case OpCheckRelease:
		var a CheckReleaseArgs
		if err := json.Unmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		return nil, s.rt.CheckRelease(ctx, a.Major, a.BinDir)
	case OpDump:
		var cfg guest.DumpConfig
		if err := json.Unmarshal(req.Args, &cfg); err != nil {
			return nil, err
		}
		return s.rt.Dump(ctx, cfg)
	case OpStopServer:
		var a StopServerArgs
		if err := json.Unmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		return nil, s.rt.StopServer(ctx, a.DataDir)
	case OpStage, OpSend, OpDrop, OpStream:
		if s.dir == "" {
			return nil, errors.New("archiving not prepared in this session")
		}
		switch req.Op {
		case OpStage, OpStream:
			var a guest.StageRequest
			if err := json.Unmarshal(req.Args, &a); err != nil {
				return nil, err
			}
			for _, n := range a.Names {
				if _, err := wal.ParseFileName(n); err != nil {
					return nil, err // also keeps names from leaving the folder
				}
			}
			if req.Op == OpStream {
				return s.stream(ctx, a)
			}
			return s.stage(ctx, a)
		case OpSend:
			var a SendArgs
			if err := json.Unmarshal(req.Args, &a); err != nil {
				return nil, err
			}
			return nil, s.send(ctx, a)
		}
		var a DropArgs
		if err := json.Unmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		return nil, s.drop(a.Object)
	case OpProbe:
		var to guest.Destination
		if err := json.Unmarshal(req.Args, &to); err != nil {
			return nil, err
		}
		return nil, probe(ctx, to)
	case OpClose:
		return nil, nil
	}
	return nil, fmt.Errorf("unknown operation %q", req.Op)
}

// recover runs Recover with a fetch function that calls the host, and ends
// the calls before the response. A host that hangs up ends the recovery.
func (s *server) recover(ctx context.Context, cfg guest.RecoveryConfig) (guest.RecoveryResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	calls := startHostCalls(s.r, s.w, cancel)
	res, err := s.rt.Recover(ctx, cfg, calls.Fetch)
	if ferr := calls.finish(); ferr != nil {
		err = errors.Join(err, ferr)
	}
	return res, err
}

// data serves the operations on the cluster's own files.
func (s *server) data(ctx context.Context, req proto.Request) (any, error) {
	if s.dataDir == "" {
		conn, err := s.rt.connect(ctx)
		if err != nil {
			return nil, err
		}
		inst, err := Scan(ctx, conn)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		s.dataDir = inst.DataDir
	}
	if req.Op == OpDataList {
		var opts guest.DataListOptions
		if err := json.Unmarshal(req.Args, &opts); err != nil {
			return nil, err
		}
		part := make([]guest.DataFile, 0, dataListPart)
		err := ListDataFiles(ctx, s.dataDir, opts, func(f guest.DataFile) error {
			if part = append(part, f); len(part) < dataListPart {
				return nil
			}
			err := s.w.WriteJSON(proto.TypeResultPart, part)
			part = part[:0]
			return err
		})
		if err == nil && len(part) > 0 {
			err = s.w.WriteJSON(proto.TypeResultPart, part)
		}
		return nil, err
	}
	var a PathsArgs
	if err := json.Unmarshal(req.Args, &a); err != nil {
		return nil, err
	}
	snd, err := NewSender(s.w, s.inst)
	if err != nil {
		return nil, err
	}
	vanished, err := sendDataFiles(snd, s.dataDir, a.Paths)
	if err != nil {
		return nil, err
	}
	return DataReadResult{Vanished: vanished}, nil
}

func (s *server) read(names []string) error {
	snd, err := NewSender(s.w, s.inst)
	if err != nil {
		return err
	}
	snd.codec = s.codec
	return snd.SendAll(s.dir, names, sendWorkers())
}

// sendWorkers is how many files are compressed at once: two cores at most,
// so shipping never takes over a busy database server.
func sendWorkers() int { return min(2, goruntime.GOMAXPROCS(0)) }

// syncDir fsyncs a folder, making the names made or removed in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
