package walbackup

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/guest"
)

// maxHistory bounds a history file held in memory; real ones are tiny.
const maxHistory = 1 << 20

// decode returns the raw content of a small frame.
func decode(f guest.Frame) ([]byte, error) {
	r := f.Data
	if f.Codec == guest.CodecZstd {
		dec, err := zstd.NewReader(f.Data, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer dec.Close()
		r = dec
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
