package bundle

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// KeySize is the size of an encryption key: AES-256.
const KeySize = 32

// Errors of this package, returned wrapped.
var (
	// ErrCorrupt: the bundle's bytes are not what was written (a checksum,
	// GCM tag or structure check failed). A *CorruptError says where.
	ErrCorrupt = errors.New("bundle corrupt")
	// ErrWrongKey: the bundle was encrypted with another key.
	ErrWrongKey = errors.New("bundle encrypted with a different key")
	// ErrKeyRequired: the bundle is encrypted and no key was given.
	ErrKeyRequired = errors.New("bundle is encrypted: a key is required")
	// ErrNotEncrypted: a key was given and the bundle is plain. With a key,
	// only sealed bundles are read: anyone who can write to the
	// repository could put a plain one in place of a sealed one.
	ErrNotEncrypted = errors.New("bundle is not encrypted, and a key is configured")
	// ErrUnbound: a sealed bundle of format version 1, whose index is not
	// bound to its object name, so it could have been moved from anywhere.
	ErrUnbound = errors.New("sealed bundle of format version 1 is not bound to its object name")
	// ErrNoSuchFile: the bundle does not hold the named file.
	ErrNoSuchFile = errors.New("file not in bundle")
)

// CorruptError reports a failed integrity check. File is the WAL file whose
// frame failed, or empty when the header, index or trailer did.
type CorruptError struct {
	Bundle string
	File   string
	Whole  bool // the object as a whole, not one file or the index
	Reason string
}

func (e *CorruptError) Error() string {
	where := "index"
	switch {
	case e.File != "":
		where = "file " + e.File
	case e.Whole:
		where = "object"
	}
	return fmt.Sprintf("bundle %s: %s: %s", e.Bundle, where, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Key encrypts and authenticates bundles with AES-256-GCM. The key itself is
// never written anywhere; bundles carry only an 8-byte key check so that a
// wrong key gives ErrWrongKey rather than a wall of tag failures.
type Key struct {
	aead  cipher.AEAD
	check [8]byte
	mac   []byte // the HMAC key of MAC, derived from the secret
}

// NewKey makes a Key from 32 secret bytes supplied by the caller.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) != KeySize {
		return nil, fmt.Errorf("bundle key must be %d bytes, got %d", KeySize, len(secret))
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Key{aead: aead}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("pglogship bundle key check v1"))
	copy(k.check[:], m.Sum(nil))
	m = hmac.New(sha256.New, secret)
	m.Write([]byte("pglogship manifest key v1"))
	k.mac = m.Sum(nil)
	return k, nil
}

// MAC is HMAC-SHA256 of b stored as object, with a key of its own derived
// from the secret: it authenticates manifests (repository.Authenticator),
// which stay readable JSON.
func (k *Key) MAC(object string, b []byte) []byte {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(object))
	m.Write([]byte{0})
	m.Write(b)
	return m.Sum(nil)
}

// String never shows key material.
func (k *Key) String() string { return fmt.Sprintf("bundle.Key(check %x)", k.check) }

// chunkNonce derives the nonce of chunk i from the frame's random nonce, so
// each chunk of each frame has its own.
func chunkNonce(frame [12]byte, i uint32) []byte {
	n := frame
	binary.BigEndian.PutUint32(n[8:], binary.BigEndian.Uint32(n[8:])^i)
	return n[:]
}
