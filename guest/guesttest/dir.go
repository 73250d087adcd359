package guesttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/wal"
)

// A dir guest is a fake guest kept in a folder, so that separate host
// processes can share it as they would share a real guest: its instance
// in instance.json and its temporary folder in wal/. A test archives WAL
// into it with PutDirWAL; the runtimes of DirDeployer list, read and
// remove the files there. Like the in-memory fake, it is for
// orchestration across processes and failures only.
const (
	dirInstance = "instance.json"
	dirWAL      = "wal"
)

var (
	_ guest.Deployer = (*DirDeployer)(nil)
	_ guest.Runtime  = (*dirRuntime)(nil)
)

// NewDirGuest makes the folder dir a guest whose PostgreSQL is inst, with
// an empty temporary folder.
func NewDirGuest(dir string, inst guest.Instance) error {
	if err := os.MkdirAll(filepath.Join(dir, dirWAL), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(inst)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, dirInstance), b, 0o600)
}

// PutDirWAL archives a file into the dir guest's temporary folder as
// archive_command would: written aside, synced, then renamed into place,
// so a runtime never sees it half written.
func PutDirWAL(dir, name string, data []byte) error {
	if _, err := wal.ParseFileName(name); err != nil {
		return err
	}
	tmp := filepath.Join(dir, dirWAL, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, dirWAL, name))
}

// DirWaiting lists the files waiting in the dir guest's temporary folder.
func DirWaiting(dir string) ([]string, error) {
	files, err := dirReady(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	return names, nil
}

// DirDeployer deploys runtimes into dir guests, found by machine id.
type DirDeployer struct {
	dirs map[string]string
	// ReadDelay is waited, on Clock (nil: the real one), before each file
	// a runtime reads (fault injection: a slow guest, so a test can stop a
	// host mid-ship).
	ReadDelay time.Duration
	Clock     clock.Clock
}

// NewDirDeployer returns a deployer for the dir guests dirs, keyed by
// machine id.
func NewDirDeployer(dirs map[string]string) *DirDeployer {
	return &DirDeployer{dirs: dirs}
}

// Deploy implements guest.Deployer.
func (d *DirDeployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	dir, ok := d.dirs[t.Machine]
	if !ok {
		return nil, fmt.Errorf("deploy to %s: no such dir guest", t.Machine)
	}
	if _, err := os.Stat(filepath.Join(dir, dirInstance)); err != nil {
		return nil, fmt.Errorf("deploy to %s: %w", t.Machine, err)
	}
	clk := d.Clock
	if clk == nil {
		clk = clock.New()
	}
	return &dirRuntime{dir: dir, delay: d.ReadDelay, clk: clk}, nil
}

type dirRuntime struct {
	dir    string
	delay  time.Duration
	clk    clock.Clock
	closed atomic.Bool
}

func (r *dirRuntime) check(ctx context.Context) error {
	if r.closed.Load() {
		return guest.ErrClosed
	}
	return ctx.Err()
}

func (r *dirRuntime) Scan(ctx context.Context) (guest.Instance, error) {
	if err := r.check(ctx); err != nil {
		return guest.Instance{}, err
	}
	var inst guest.Instance
	b, err := os.ReadFile(filepath.Join(r.dir, dirInstance))
	if err == nil {
		err = json.Unmarshal(b, &inst)
	}
	return inst, err
}

func (r *dirRuntime) PrepareArchive(ctx context.Context, cfg guest.ArchiveConfig) error {
	inst, err := r.Scan(ctx)
	if err != nil {
		return err
	}
	return guest.CheckRequirements(inst, func(cmd string) bool { return cmd == ArchiveCommand })
}

func (r *dirRuntime) Ready(ctx context.Context) ([]guest.File, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	return dirReady(r.dir)
}

func dirReady(dir string) ([]guest.File, error) {
	entries, err := os.ReadDir(filepath.Join(dir, dirWAL))
	if err != nil {
		return nil, err
	}
	var files []guest.File
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // being written
		}
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		files = append(files, guest.File{Name: e.Name(), Size: info.Size()})
	}
	slices.SortFunc(files, func(a, b guest.File) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

func (r *dirRuntime) Read(ctx context.Context, names []string, fn func(guest.Frame) error) error {
	for _, n := range names {
		if err := r.check(ctx); err != nil {
			return err
		}
		if _, err := wal.ParseFileName(n); err != nil {
			return err
		}
		if r.delay > 0 {
			t := r.clk.Timer(r.delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		data, err := os.ReadFile(filepath.Join(r.dir, dirWAL, n))
		if err != nil {
			return fmt.Errorf("read %s: %w", n, err)
		}
		if err := fn(rawFrame(n, data)); err != nil {
			return err
		}
	}
	return nil
}

func (r *dirRuntime) Remove(ctx context.Context, names []string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	for _, n := range names {
		if _, err := wal.ParseFileName(n); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(r.dir, dirWAL, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (r *dirRuntime) Close(ctx context.Context) error {
	r.closed.Store(true)
	return nil
}
