package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Errors returned (possibly wrapped) by every Repository.
var (
	// ErrNotFound: no object has that name.
	ErrNotFound = errors.New("object not found")
	// ErrConflict: an object with that name exists with other content.
	// Objects are never overwritten.
	ErrConflict = errors.New("object exists with different content")
	// ErrInvalidName: the name breaks the rules of ValidName.
	ErrInvalidName = errors.New("invalid object name")
	// ErrInvalidRange: a read starts past the end of the object or has a
	// negative offset.
	ErrInvalidRange = errors.New("invalid read range")
	// ErrTooLarge: an object (or the part of it a reader holds in memory:
	// a manifest, a bundle's index) is over the size its reader accepts,
	// so a hostile repository cannot make the host allocate without bound.
	// Writers refuse to write what their readers would refuse.
	ErrTooLarge = errors.New("object over the size its reader accepts")
)

// Object describes a stored object.
type Object struct {
	Name string
	Size int64
}

// Repository stores named objects durably. Every method is safe for
// concurrent use, and a name refused by ValidName gives ErrInvalidName
// without touching the store.
type Repository interface {
	// Put stores everything read from r under name and returns only once
	// the object is durable: a crash after Put returns cannot lose it. The
	// object appears whole or not at all; a failed or canceled Put leaves
	// nothing visible under name. Objects are immutable: if name exists
	// with identical content Put succeeds without writing (so retries are
	// safe), and with different content it returns ErrConflict and keeps
	// the existing object. Of concurrent Puts to one name, the first to
	// commit wins and the rest behave as if they came after it.
	Put(ctx context.Context, name string, r io.Reader) error

	// Get opens the object for reading length bytes from offset; length < 0
	// reads to the end, and a range past the end is cut short at the end.
	// An offset beyond the object's size gives ErrInvalidRange. A missing
	// object gives ErrNotFound. The caller closes the reader.
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)

	// Stat returns the object's size, or ErrNotFound.
	Stat(ctx context.Context, name string) (Object, error)

	// List calls fn for every committed object whose name starts with
	// prefix, in lexical order of names. An empty prefix lists everything;
	// objects still being written are never listed. An error from fn stops
	// the listing and is returned as is.
	List(ctx context.Context, prefix string, fn func(Object) error) error

	// Delete removes the object. Deleting a missing object succeeds, so
	// Delete is idempotent.
	Delete(ctx context.Context, name string) error
}

// MaxNameLen bounds object names, so every backend can hold them.
const MaxNameLen = 1024

// ValidName checks an object name: slash-separated components, each made of
// ASCII letters, digits, '.', '_' and '-', none empty, "." or "..", and no
// component starting with '.' (implementations keep their temporary files
// under such names, so they can never collide with an object).
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q: must be 1 to %d bytes", ErrInvalidName, name, MaxNameLen)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part[0] == '.' {
			return fmt.Errorf("%w: %q: empty or dot-prefixed component", ErrInvalidName, name)
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%w: %q: byte %q not allowed", ErrInvalidName, name, c)
			}
		}
	}
	return nil
}
