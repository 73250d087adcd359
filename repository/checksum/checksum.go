// Package checksum is the checksum pglogship keeps of every file it
// stores, computed from the file's content where it was read and checked
// wherever the content is stored or restored.
//
// Two algorithms exist. SHA-256 covers images, history files and the WAL
// bundles of earlier releases. XXH3-128 covers WAL bundles: a WAL file's
// checksum guards against corruption on the way and in the store, not
// against forgery (a bundle written with a key is authenticated by its
// seal, one written without a key by nothing, whatever its checksum), and
// XXH3 costs a tenth of SHA-256's CPU, which was a fifth of shipping's.
package checksum

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/zeebo/xxh3"
)

// Algorithm is how a Sum was computed.
type Algorithm uint8

const (
	SHA256 Algorithm = iota // SHA-256, 32 bytes
	XXH3                    // XXH3-128 (seed 0), 16 bytes
)

// Size is the number of bytes of a's digest.
func (a Algorithm) Size() int {
	if a == XXH3 {
		return 16
	}
	return 32
}

// String is the algorithm's name, as Sum.String prefixes it.
func (a Algorithm) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case XXH3:
		return "xxh3"
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

// Valid reports whether a is a known algorithm.
func (a Algorithm) Valid() bool { return a == SHA256 || a == XXH3 }

// MarshalText writes a's name.
func (a Algorithm) MarshalText() ([]byte, error) {
	if !a.Valid() {
		return nil, fmt.Errorf("checksum: unknown %v", a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads a name MarshalText wrote.
func (a *Algorithm) UnmarshalText(b []byte) error {
	for _, v := range []Algorithm{SHA256, XXH3} {
		if string(b) == v.String() {
			*a = v
			return nil
		}
	}
	return fmt.Errorf("%w: unknown algorithm %q", ErrMalformed, b)
}

// Sum is one file's checksum. Sums compare with ==: two sums are equal
// only when both algorithm and digest are.
type Sum struct {
	Algorithm Algorithm
	// Digest holds the digest in its first Algorithm.Size() bytes; the
	// rest is zero.
	Digest [32]byte
}

// Bytes is the digest without padding.
func (s Sum) Bytes() []byte { return s.Digest[:s.Algorithm.Size()] }

// IsZero reports whether s is the zero Sum (no checksum).
func (s Sum) IsZero() bool { return s == Sum{} }

// Hex is the digest in lower-case hex, without the algorithm.
func (s Sum) Hex() string { return hex.EncodeToString(s.Bytes()) }

// String is "<algorithm>:<hex digest>", as Parse reads it.
func (s Sum) String() string { return s.Algorithm.String() + ":" + s.Hex() }

// MarshalText writes s as String does.
func (s Sum) MarshalText() ([]byte, error) {
	if !s.Algorithm.Valid() {
		return nil, fmt.Errorf("checksum: unknown %v", s.Algorithm)
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads what MarshalText wrote.
func (s *Sum) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ErrMalformed means a checksum's text is not "<algorithm>:<hex digest>".
var ErrMalformed = errors.New("malformed checksum")

// Parse reads "<algorithm>:<hex digest>" (Sum.String).
func Parse(text string) (Sum, error) {
	name, digest, ok := strings.Cut(text, ":")
	if !ok {
		return Sum{}, fmt.Errorf("%w: %q has no algorithm", ErrMalformed, text)
	}
	var a Algorithm
	if err := a.UnmarshalText([]byte(name)); err != nil {
		return Sum{}, err
	}
	return FromHex(a, digest)
}

// FromHex reads a digest of algorithm a in hex.
func FromHex(a Algorithm, digest string) (Sum, error) {
	b, err := hex.DecodeString(digest)
	if err != nil || len(b) != a.Size() || !a.Valid() {
		return Sum{}, fmt.Errorf("%w: %q is not a %v digest", ErrMalformed, digest, a)
	}
	return FromBytes(a, b), nil
}

// FromBytes makes the Sum of algorithm a from its digest; b must be
// a.Size() bytes long.
func FromBytes(a Algorithm, b []byte) Sum {
	s := Sum{Algorithm: a}
	copy(s.Digest[:a.Size()], b)
	return s
}

// OfSHA256 is the Sum of a SHA-256 digest.
func OfSHA256(d [32]byte) Sum { return Sum{Algorithm: SHA256, Digest: d} }

// Hash computes a Sum of what is written to it.
type Hash interface {
	Write(p []byte) (int, error) // never fails
	// Sum is the checksum of everything written since the last Reset.
	Sum() Sum
	Reset()
}

// New returns a Hash of algorithm a, which must be valid.
func New(a Algorithm) Hash {
	switch a {
	case SHA256:
		return &shaHash{sha256.New()}
	case XXH3:
		return &xxh3Hash{xxh3.New()}
	}
	panic(fmt.Sprintf("checksum.New: unknown %v", a))
}

// Of is the Sum of b with algorithm a.
func Of(a Algorithm, b []byte) Sum {
	if a == XXH3 {
		d := xxh3.Hash128(b).Bytes()
		return FromBytes(XXH3, d[:])
	}
	return OfSHA256(sha256.Sum256(b))
}

type shaHash struct{ h hash.Hash }

func (s *shaHash) Write(p []byte) (int, error) { return s.h.Write(p) }
func (s *shaHash) Reset()                      { s.h.Reset() }
func (s *shaHash) Sum() Sum {
	var d [32]byte
	s.h.Sum(d[:0])
	return OfSHA256(d)
}

type xxh3Hash struct{ h *xxh3.Hasher }

func (x *xxh3Hash) Write(p []byte) (int, error) { return x.h.Write(p) }
func (x *xxh3Hash) Reset()                      { x.h.Reset() }
func (x *xxh3Hash) Sum() Sum {
	d := x.h.Sum128().Bytes()
	return FromBytes(XXH3, d[:])
}
