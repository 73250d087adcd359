package bundle

import (
	"crypto/sha256"
	"time"

	"github.com/pglogship/pglogship/repository/checksum"
)

// Assemble builds a plain bundle around one frame given as raw bytes, with
// a correct index and trailer, for fuzzing the frame parser.
func Assemble(frame []byte, name string, rawSize int64, sum checksum.Sum) []byte {
	h := header{}
	hb := h.marshal()
	idx, _ := encodeIndex([]Entry{{Name: name, RawSize: rawSize, Sum: sum, Offset: headerSize, Length: int64(len(frame))}}, time.Time{})
	t := trailer{indexOffset: int64(headerSize + len(frame)), indexLength: int64(len(idx))}
	s := sha256.New()
	s.Write(hb)
	s.Write(idx)
	copy(t.sum[:], s.Sum(nil))
	out := append(append(append(hb, frame...), idx...), t.marshal()...)
	return out
}

// ReadBack is readBack, for its tests.
var ReadBack = readBack
