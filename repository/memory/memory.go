// Package memory is a repository.Repository held in process memory.
//
// It keeps the full contract (immutability, conflicts, ranges, ordered
// listing) so orchestration code can be unit-tested against it, and it can
// inject faults. It forgets everything when the process exits: it proves
// nothing about durability, which the conformance suite checks on the real
// backends.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/pglogship/pglogship/repository"
)

var _ repository.Repository = (*Repo)(nil)

// Op names an operation for fault injection.
type Op string

const (
	OpPut    Op = "put"
	OpGet    Op = "get"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpDelete Op = "delete"
)

// Repo is an in-memory repository. The zero value is not usable; call New.
type Repo struct {
	mu      sync.Mutex
	objects map[string][]byte
	fault   func(op Op, name string) error
}

// New returns an empty repository.
func New() *Repo { return &Repo{objects: make(map[string][]byte)} }

// SetFault installs f, which is called before every operation; a non-nil
// result is returned by the operation, which then does nothing. A nil f
// removes the hook. For List the name is the prefix.
func (r *Repo) SetFault(f func(op Op, name string) error) {
	r.mu.Lock()
	r.fault = f
	r.mu.Unlock()
}

func (r *Repo) check(ctx context.Context, op Op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if op != OpList { // a list prefix may end mid-component
		if err := repository.ValidName(name); err != nil {
			return err
		}
	}
	r.mu.Lock()
	f := r.fault
	r.mu.Unlock()
	if f != nil {
		return f(op, name)
	}
	return nil
}

// Put implements repository.Repository.
func (r *Repo) Put(ctx context.Context, name string, rd io.Reader) error {
	if err := r.check(ctx, OpPut, name); err != nil {
		return err
	}
	data, err := io.ReadAll(rd)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.objects[name]; ok {
		if bytes.Equal(old, data) {
			return nil
		}
		return fmt.Errorf("put %s: %w", name, repository.ErrConflict)
	}
	r.objects[name] = data
	return nil
}

// Get implements repository.Repository.
func (r *Repo) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := r.check(ctx, OpGet, name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	data, ok := r.objects[name]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("get %s: %w", name, repository.ErrNotFound)
	}
	if offset < 0 || offset > int64(len(data)) {
		return nil, fmt.Errorf("get %s at %d of %d: %w", name, offset, len(data), repository.ErrInvalidRange)
	}
	end := int64(len(data))
	if length >= 0 && offset+length < end {
		end = offset + length
	}
	// Stored slices are never modified, so readers can share them.
	return io.NopCloser(bytes.NewReader(data[offset:end])), nil
}

// Stat implements repository.Repository.
func (r *Repo) Stat(ctx context.Context, name string) (repository.Object, error) {
	if err := r.check(ctx, OpStat, name); err != nil {
		return repository.Object{}, err
	}
	r.mu.Lock()
	data, ok := r.objects[name]
	r.mu.Unlock()
	if !ok {
		return repository.Object{}, fmt.Errorf("stat %s: %w", name, repository.ErrNotFound)
	}
	return repository.Object{Name: name, Size: int64(len(data))}, nil
}

// List implements repository.Repository.
func (r *Repo) List(ctx context.Context, prefix string, fn func(repository.Object) error) error {
	if err := r.check(ctx, OpList, prefix); err != nil {
		return err
	}
	r.mu.Lock()
	var found []repository.Object
	for name, data := range r.objects {
		if strings.HasPrefix(name, prefix) {
			found = append(found, repository.Object{Name: name, Size: int64(len(data))})
		}
	}
	r.mu.Unlock()
	sort.Slice(found, func(i, j int) bool { return found[i].Name < found[j].Name })
	for _, o := range found {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements repository.Repository.
func (r *Repo) Delete(ctx context.Context, name string) error {
	if err := r.check(ctx, OpDelete, name); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.objects, name)
	r.mu.Unlock()
	return nil
}
