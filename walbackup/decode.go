package walbackup

import (
	"fmt"
	"io"

	"github.com/pglogship/pglogship/internal/zpool"

	"github.com/pglogship/pglogship/guest"
)

// maxHistory bounds a history file held in memory; real ones are tiny.
const maxHistory = 1 << 20

// decode returns the raw content of a small frame.
func decode(f guest.Frame) ([]byte, error) {
	r := f.Data
	switch f.Codec {
	case guest.CodecZstd:
		dec, err := zpool.GetDecoder(f.Data)
		if err != nil {
			return nil, err
		}
		defer zpool.PutDecoder(dec)
		r = dec
	case guest.CodecS2:
		dec := zpool.GetS2Reader(f.Data)
		defer zpool.PutS2Reader(dec)
		r = dec
	case guest.CodecNone:
	default:
		return nil, fmt.Errorf("%s: the guest sent unknown codec %q", f.Name, f.Codec)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxHistory+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxHistory {
		return nil, fmt.Errorf("%s is larger than %d bytes", f.Name, maxHistory)
	}
	return b, nil
}
