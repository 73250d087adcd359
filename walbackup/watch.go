package walbackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
)

// ErrStalled means a guest or repository call made no progress for
// Config.OperationTimeout and was abandoned.
var ErrStalled = errors.New("no progress")

// watchdog ends a context when its operation stops making progress. A
// whole ship can take as long as its WAL needs; only silence is bounded.
type watchdog struct {
	d     time.Duration
	timer *clock.Timer
}

// watch returns a context that ends with ErrStalled (as its cause) when
// kick was not called for d, and the watchdog to kick.
func watch(ctx context.Context, clk clock.Clock, d time.Duration) (context.Context, *watchdog, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{d: d}
	w.timer = clk.AfterFunc(d, func() { cancel(fmt.Errorf("%w for %v", ErrStalled, d)) })
	return ctx, w, func() { w.timer.Stop(); cancel(context.Canceled) }
}

func (w *watchdog) kick() { w.timer.Reset(w.d) }

// explain adds why ctx ended to err when the watchdog ended it.
func explain(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrStalled) && !errors.Is(err, ErrStalled) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// watchedRuntime kicks the watchdog on every call and on every read of
// frame data.
type watchedRuntime struct {
	guest.Runtime
	w *watchdog
}

func (r watchedRuntime) Ready(ctx context.Context) ([]guest.File, error) {
	r.w.kick()
	defer r.w.kick()
	return r.Runtime.Ready(ctx)
}

func (r watchedRuntime) Read(ctx context.Context, names []string, fn func(guest.Frame) error) error {
	r.w.kick()
	defer r.w.kick()
	return r.Runtime.Read(ctx, names, func(f guest.Frame) error {
		r.w.kick()
		f.Data = watchedReader{f.Data, r.w}
		return fn(f)
	})
}

func (r watchedRuntime) Remove(ctx context.Context, names []string) error {
	r.w.kick()
	defer r.w.kick()
	return r.Runtime.Remove(ctx, names)
}

// watchedRepo kicks the watchdog on every call and on every read of object
// data in either direction.
type watchedRepo struct {
	repository.Repository
	w *watchdog
}

func (r watchedRepo) Put(ctx context.Context, name string, rd io.Reader) error {
	r.w.kick()
	defer r.w.kick()
	return r.Repository.Put(ctx, name, watchedReader{rd, r.w})
}

func (r watchedRepo) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	r.w.kick()
	defer r.w.kick()
	rc, err := r.Repository.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{watchedReader{rc, r.w}, rc}, nil
}

func (r watchedRepo) Stat(ctx context.Context, name string) (repository.Object, error) {
	r.w.kick()
	defer r.w.kick()
	return r.Repository.Stat(ctx, name)
}

func (r watchedRepo) List(ctx context.Context, prefix string, fn func(repository.Object) error) error {
	r.w.kick()
	defer r.w.kick()
	return r.Repository.List(ctx, prefix, func(o repository.Object) error { r.w.kick(); return fn(o) })
}

type watchedReader struct {
	r io.Reader
	w *watchdog
}

func (r watchedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.w.kick()
	}
	return n, err
}

// watchedDirect kicks the watchdog around every direct shipping call.
type watchedDirect struct {
	guest.DirectShipper
	w *watchdog
}

func (r watchedDirect) StageBundle(ctx context.Context, req guest.StageRequest) (guest.Staged, error) {
	r.w.kick()
	defer r.w.kick()
	return r.DirectShipper.StageBundle(ctx, req)
}

func (r watchedDirect) SendBundle(ctx context.Context, object string, to guest.Destination) error {
	r.w.kick()
	defer r.w.kick()
	return r.DirectShipper.SendBundle(ctx, object, to)
}

// streamerOf returns rt's guest.BundleStreamer, looking through the
// watchdog's wrapper (which then kicks it as the bundle streams).
func streamerOf(rt guest.Runtime) (guest.BundleStreamer, bool) {
	if w, ok := rt.(watchedRuntime); ok {
		bs, ok := w.Runtime.(guest.BundleStreamer)
		if !ok {
			return nil, false
		}
		return watchedStreamer{bs, w.w}, true
	}
	bs, ok := rt.(guest.BundleStreamer)
	return bs, ok
}

type watchedStreamer struct {
	guest.BundleStreamer
	w *watchdog
}

func (r watchedStreamer) StreamBundle(ctx context.Context, req guest.StageRequest, fn func(io.Reader) error) (guest.Staged, error) {
	r.w.kick()
	defer r.w.kick()
	return r.BundleStreamer.StreamBundle(ctx, req, func(rd io.Reader) error { return fn(watchedReader{rd, r.w}) })
}
