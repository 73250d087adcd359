// Package zpool makes and reuses the project's zstd encoders and decoders.
// Each holds megabytes of buffers, and WAL moves a file at a time (every
// segment shipped, fetched or bundled), so they come from small bounded
// pools; a burst of work does not stay in memory afterwards, and a garbage
// collection does not empty them.
package zpool

import (
	"io"

	"github.com/klauspost/compress/zstd"
)

// MaxWindow is the largest window a decoder accepts: it bounds the memory
// a stream from elsewhere can make a decoder take.
const MaxWindow = 64 << 20

const poolSize = 4

var (
	encoders = make(chan *zstd.Encoder, poolSize)
	decoders = make(chan *zstd.Decoder, poolSize)
)

// GetEncoder returns an encoder writing to w (nil: none yet): the fastest
// level, one goroutine, and a 1 MiB window, which compresses WAL as well as
// the default 8 MiB one (its matches are short) in an eighth of the memory.
func GetEncoder(w io.Writer) *zstd.Encoder {
	select {
	case e := <-encoders:
		e.Reset(w)
		return e
	default:
		// The options are constants that NewWriter accepts.
		e, _ := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(1<<20))
		return e
	}
}

// PutEncoder gives e back; it must not be used after.
func PutEncoder(e *zstd.Encoder) {
	e.Reset(nil)
	select {
	case encoders <- e:
	default: // the pool is full: let it go
	}
}

// GetDecoder returns a decoder reading r (nil: none yet), bounded by
// MaxWindow.
func GetDecoder(r io.Reader) (*zstd.Decoder, error) {
	var d *zstd.Decoder
	select {
	case d = <-decoders:
	default:
		var err error
		if d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(MaxWindow)); err != nil {
			return nil, err
		}
	}
	if r != nil {
		if err := d.Reset(r); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// PutDecoder gives d back; it must not be used after.
func PutDecoder(d *zstd.Decoder) {
	if d.Reset(nil) != nil { // cannot drop its stream: not reused
		d.Close()
		return
	}
	select {
	case decoders <- d:
	default:
		d.Close()
	}
}
