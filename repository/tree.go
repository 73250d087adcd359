package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
)

// TreeEntry is one directory entry of a backend that keeps objects as files
// in a directory tree (fs, sftp).
type TreeEntry struct {
	Name    string // base name
	Dir     bool
	Regular bool
	Size    int64
}

// WalkTree implements List for directory-tree backends. readDir lists a
// directory given as a slash-separated path relative to the root ("" is the
// root) and returns (nil, nil) for a directory that does not exist. Only the
// directory the prefix names and what lies below it is read; entries whose
// names start with '.' (temporary files) are skipped; objects come in the
// byte order of their full names. An error from fn is returned as is.
func WalkTree(ctx context.Context, prefix string, readDir func(dir string) ([]TreeEntry, error), fn func(Object) error) error {
	dir := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = prefix[:i]
		if ValidName(dir) != nil {
			return nil // no object can have this prefix
		}
	}
	return walkTree(ctx, dir, prefix, readDir, fn)
}

func walkTree(ctx context.Context, dir, prefix string, readDir func(string) ([]TreeEntry, error), fn func(Object) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	type item struct {
		key, name string
		e         TreeEntry
	}
	items := make([]item, 0, len(entries))
	for _, e := range entries {
		if strings.HasPrefix(e.Name, ".") {
			continue
		}
		full := e.Name
		if dir != "" {
			full = dir + "/" + e.Name
		}
		key := full
		if e.Dir {
			key += "/" // so "b-x" sorts before "b/c", as in byte order of names
		}
		// Keep only what is under the prefix or leads to it.
		if !strings.HasPrefix(key, prefix) && !strings.HasPrefix(prefix, key) {
			continue
		}
		items = append(items, item{key, full, e})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
	for _, it := range items {
		switch {
		case it.e.Dir:
			if err := walkTree(ctx, it.name, prefix, readDir, fn); err != nil {
				return err
			}
		case it.e.Regular && strings.HasPrefix(it.name, prefix):
			if err := fn(Object{Name: it.name, Size: it.e.Size}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ContextReader returns a reader that fails with ctx's error once ctx ends,
// so a long copy into a backend stops promptly when canceled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ReaderAtCloser is an open file of a file-like backend.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// Section implements Get's range rules over an open file of the given size:
// length < 0 reads to the end, a range past the end is cut short, and an
// offset outside [0, size] gives ErrInvalidRange (and closes f).
func Section(f ReaderAtCloser, size, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || offset > size {
		f.Close()
		return nil, fmt.Errorf("offset %d of %d: %w", offset, size, ErrInvalidRange)
	}
	n := size - offset
	if length >= 0 && length < n {
		n = length
	}
	return &section{io.NewSectionReader(f, offset, n), f}, nil
}

type section struct {
	*io.SectionReader
	c io.Closer
}

func (s *section) Close() error { return s.c.Close() }

// StatFile is an open file of a file-like backend that knows its size.
type StatFile interface {
	ReaderAtCloser
	Stat() (fs.FileInfo, error)
}

// SameFiles tells whether the files a and b of a file-like backend, opened
// with open, hold the same bytes: how Put compares the object it could not
// commit with the one already there, instead of summing every object it
// writes.
func SameFiles[F StatFile](open func(name string) (F, error), a, b string) (bool, error) {
	fa, err := open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	sa, err := fa.Stat()
	if err != nil {
		return false, err
	}
	sb, err := fb.Stat()
	if err != nil {
		return false, err
	}
	sizeA, sizeB := sa.Size(), sb.Size()
	if sizeA != sizeB {
		return false, nil
	}
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < sizeA; {
		n := int(min(int64(len(bufA)), sizeA-off))
		if _, err := fa.ReadAt(bufA[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == sizeA) {
			return false, err
		}
		if _, err := fb.ReadAt(bufB[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == sizeA) {
			return false, err
		}
		if !bytes.Equal(bufA[:n], bufB[:n]) {
			return false, nil
		}
		off += int64(n)
	}
	return true, nil
}
