package bundle

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/pglogship/pglogship/internal/zpool"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Layout constants; docs/repository-format.md is the normative description.
const (
	headerMagic  = "PGLSBNDL"
	trailerMagic = "PGLSEND1"
	frameMagic   = "FRM1"
	// version 2 seals the index with the object's name in its associated
	// data; a sealed version 1 bundle is bound to nothing and is refused.
	version      = 2
	indexVersion = 1

	flagEncrypted = 1
	// flagXXH3: the files' checksums (index and footers) are XXH3-128;
	// without it they are SHA-256.
	flagXXH3 = 2

	headerSize  = 32 // magic 8, version 1, flags 1, reserved 2, key check 8, bundle id 12
	trailerSize = 56 // index offset 8, index length 8, sha256 32, magic 8

	// ChunkSize is the most payload one chunk carries; it bounds the memory
	// a writer or reader needs whatever the WAL segment size.
	ChunkSize = 1 << 20

	// finalBit marks the last chunk of a frame in its length word.
	finalBit = 1 << 31

	maxName = 1024
	// footerSize is raw size 8 + checksum 32 (XXH3: 16 and 16 zero
	// bytes), before sealing.
	footerSize = 40
	// footerChunk is the chunk number used for the footer's nonce.
	footerChunk = ^uint32(0)
)

// MaxIndex bounds the index a reader holds in memory (about a million
// files); a larger one is repository.ErrTooLarge, and a writer refuses to
// write it.
const MaxIndex = 256 << 20

// MaxWindow is the largest zstd window a reader accepts in a file's
// stream; a receiver of Reader.WriteCompressed's stream should bound its
// decoder's memory the same way.
const MaxWindow = zpool.MaxWindow

// Entry describes one file in a bundle.
type Entry struct {
	Name    string       // WAL file name
	RawSize int64        // size of the file as PostgreSQL wrote it
	Sum     checksum.Sum // of the raw content; the bundle's algorithm
	Offset  int64        // where its frame starts in the bundle
	Length  int64        // the frame's length in bytes
	// Codec is how the frame's payload is compressed: Zstd or S2.
	Codec Codec
	// Meta is what the writer said about the file (Writer.SetMeta), a JSON
	// value, or nil.
	Meta json.RawMessage
}

type indexJSON struct {
	Version int         `json:"version"`
	Created string      `json:"created,omitempty"` // RFC 3339, UTC; absent in bundles of older writers
	Files   []entryJSON `json:"files"`
}

type entryJSON struct {
	Name    string          `json:"name"`
	RawSize int64           `json:"raw_size"`
	SHA256  string          `json:"sha256,omitempty"` // hex, in a bundle without flagXXH3
	XXH3    string          `json:"xxh3,omitempty"`   // hex, in a bundle with it
	Offset  int64           `json:"offset"`
	Length  int64           `json:"length"`
	Meta    json.RawMessage `json:"meta,omitempty"`
	// Codec is "s2" for an S2 stream; absent for zstd, the first codec.
	Codec string `json:"codec,omitempty"`
}

func encodeIndex(entries []Entry, created time.Time) ([]byte, error) {
	idx := indexJSON{Version: indexVersion, Files: make([]entryJSON, len(entries))}
	if !created.IsZero() {
		idx.Created = created.UTC().Format(time.RFC3339Nano)
	}
	for i, e := range entries {
		idx.Files[i] = entryJSON{Name: e.Name, RawSize: e.RawSize, Offset: e.Offset, Length: e.Length, Meta: e.Meta}
		if e.Sum.Algorithm == checksum.XXH3 {
			idx.Files[i].XXH3 = e.Sum.Hex()
		} else {
			idx.Files[i].SHA256 = e.Sum.Hex()
		}
		if e.Codec == S2 {
			idx.Files[i].Codec = codecNameS2
		}
	}
	return json.Marshal(idx)
}

// decodeIndex parses and checks an index against the bundle's size: frames
// must lie between the header and the index, in order, without overlap.
func decodeIndex(b []byte, indexOffset int64, alg checksum.Algorithm) ([]Entry, time.Time, error) {
	var idx indexJSON
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, time.Time{}, fmt.Errorf("index: %v", err)
	}
	if idx.Version != indexVersion {
		return nil, time.Time{}, fmt.Errorf("index version %d, want %d", idx.Version, indexVersion)
	}
	var created time.Time
	if idx.Created != "" {
		var err error
		if created, err = time.Parse(time.RFC3339Nano, idx.Created); err != nil {
			return nil, time.Time{}, fmt.Errorf("index: created %q: %v", idx.Created, err)
		}
	}
	entries := make([]Entry, len(idx.Files))
	next := int64(headerSize)
	seen := make(map[string]bool, len(idx.Files))
	for i, f := range idx.Files {
		e := Entry{Name: f.Name, RawSize: f.RawSize, Offset: f.Offset, Length: f.Length, Meta: f.Meta, Codec: Zstd}
		if f.Codec == codecNameS2 {
			e.Codec = S2
		}
		digest, other := f.SHA256, f.XXH3
		if alg == checksum.XXH3 {
			digest, other = f.XXH3, f.SHA256
		}
		sum, err := checksum.FromHex(alg, digest)
		switch {
		case f.Codec != "" && f.Codec != codecNameS2:
			return nil, time.Time{}, fmt.Errorf("index entry %d (%s): unknown codec %q", i, f.Name, f.Codec)
		case err != nil || other != "":
			return nil, time.Time{}, fmt.Errorf("index entry %d: bad %v checksum", i, alg)
		case f.Name == "" || len(f.Name) > maxName || seen[f.Name]:
			return nil, time.Time{}, fmt.Errorf("index entry %d: bad or repeated name %q", i, f.Name)
		case f.RawSize < 0 || f.Offset != next || f.Length <= 0 || f.Length > indexOffset-f.Offset:
			return nil, time.Time{}, fmt.Errorf("index entry %d (%s): frame outside the bundle", i, f.Name)
		}
		seen[f.Name] = true
		e.Sum = sum
		entries[i] = e
		next = f.Offset + f.Length
	}
	if next != indexOffset {
		return nil, time.Time{}, fmt.Errorf("index does not account for bytes %d to %d", next, indexOffset)
	}
	return entries, created, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type header struct {
	version   byte
	encrypted bool
	sums      checksum.Algorithm // of the files
	keyCheck  [8]byte
	id        [12]byte
}

func (h header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b, headerMagic)
	b[8] = version
	if h.encrypted {
		b[9] |= flagEncrypted
	}
	if h.sums == checksum.XXH3 {
		b[9] |= flagXXH3
	}
	copy(b[12:20], h.keyCheck[:])
	copy(b[20:32], h.id[:])
	return b
}

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) != headerSize || string(b[:8]) != headerMagic {
		return h, fmt.Errorf("not a pglogship bundle")
	}
	if b[8] != version && b[8] != 1 {
		return h, fmt.Errorf("bundle version %d, want %d", b[8], version)
	}
	h.version = b[8]
	if b[9]&^(flagEncrypted|flagXXH3) != 0 || b[10] != 0 || b[11] != 0 {
		return h, fmt.Errorf("unknown header flags")
	}
	h.encrypted = b[9]&flagEncrypted != 0
	if b[9]&flagXXH3 != 0 {
		h.sums = checksum.XXH3
	}
	copy(h.keyCheck[:], b[12:20])
	copy(h.id[:], b[20:32])
	if !h.encrypted && h.keyCheck != [8]byte{} {
		return h, fmt.Errorf("key check set on a plain bundle")
	}
	return h, nil
}

type trailer struct {
	indexOffset, indexLength int64
	sum                      [32]byte
}

func (t trailer) marshal() []byte {
	b := make([]byte, trailerSize)
	binary.BigEndian.PutUint64(b[0:], uint64(t.indexOffset))
	binary.BigEndian.PutUint64(b[8:], uint64(t.indexLength))
	copy(b[16:48], t.sum[:])
	copy(b[48:], trailerMagic)
	return b
}

func parseTrailer(b []byte, size int64) (trailer, error) {
	var t trailer
	if len(b) != trailerSize || string(b[48:]) != trailerMagic {
		return t, fmt.Errorf("no bundle trailer (incomplete or not a bundle)")
	}
	off, n := binary.BigEndian.Uint64(b[0:]), binary.BigEndian.Uint64(b[8:])
	if off < headerSize || n == 0 || off > uint64(size) || off+n != uint64(size-trailerSize) {
		return t, fmt.Errorf("trailer points outside the bundle")
	}
	t.indexOffset, t.indexLength = int64(off), int64(n)
	copy(t.sum[:], b[16:48])
	return t, nil
}

// codecNameS2 names the S2 codec in the index.
const codecNameS2 = "s2"

// frameHeader is magic 4, codec 1 (the Codec's value: 1 zstd, 2 S2), name
// length 2, name, nonce 12. It is the additional data of every sealed
// chunk of the frame.
func frameHeader(name string, codec Codec, nonce [12]byte) []byte {
	b := make([]byte, 0, 4+1+2+len(name)+12)
	b = append(b, frameMagic...)
	b = append(b, byte(codec))
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	return append(b, nonce[:]...)
}

// indexAAD binds a sealed index, and through the bundle id every chunk,
// to the bundle and to the object name it was written for: the name
// holds the job, machine, cluster, timeline and kind, so a sealed bundle
// replayed at another path or under another instance fails to open.
func indexAAD(id [12]byte, object string) []byte {
	aad := append(id[:], "index"...)
	return append(append(aad, 0), object...)
}

// chunkAAD binds a sealed chunk to its bundle, frame, position and finality,
// so chunks cannot be moved, reordered, dropped or truncated unnoticed.
func chunkAAD(id [12]byte, fh []byte, i uint32, final bool) []byte {
	aad := make([]byte, 0, len(id)+len(fh)+5)
	aad = append(aad, id[:]...)
	aad = append(aad, fh...)
	aad = binary.BigEndian.AppendUint32(aad, i)
	if final {
		return append(aad, 1)
	}
	return append(aad, 0)
}
