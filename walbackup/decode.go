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
	var b []byte
	err := decoded(f, func(r io.Reader) error {
		var err error
		b, err = io.ReadAll(io.LimitReader(r, maxHistory+1))
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(b) > maxHistory {
		return nil, fmt.Errorf("%s is larger than %d bytes", f.Name, maxHistory)
	}
	return b, nil
}

// decoded calls fn with a reader of the frame's raw content.
func decoded(f guest.Frame, fn func(io.Reader) error) error {
	switch f.Codec {
	case guest.CodecZstd:
		dec, err := zpool.GetDecoder(f.Data)
		if err != nil {
			return err
		}
		defer zpool.PutDecoder(dec)
		return fn(dec)
	case guest.CodecS2:
		dec := zpool.GetS2Reader(f.Data)
		defer zpool.PutS2Reader(dec)
		return fn(dec)
	case guest.CodecNone:
		return fn(f.Data)
	}
	return fmt.Errorf("%s: the guest sent unknown codec %q", f.Name, f.Codec)
}
