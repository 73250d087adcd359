// Package zpool makes and reuses the project's zstd and S2 encoders and
// decoders.
// Each holds megabytes of buffers, and WAL moves a file at a time (every
// segment shipped, fetched or bundled), so they come from small bounded
// pools; a burst of work does not stay in memory afterwards, and a garbage
// collection does not empty them.
package zpool

import (
	"io"

	"github.com/klauspost/compress/s2"
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
	if e, ok := take(encoders); ok {
		e.Reset(w)
		return e
	}
	// The options are constants that NewWriter accepts.
	e, _ := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(1<<20))
	return e
}

// PutEncoder gives e back; it must not be used after.
func PutEncoder(e *zstd.Encoder) {
	e.Reset(nil)
	give(encoders, e)
}

// take returns an idle value of pool p, if it has one.
func take[T any](p chan T) (T, bool) {
	select {
	case v := <-p:
		return v, true
	default:
		var zero T
		return zero, false
	}
}

// give puts v back into p, unless p is full (then v is let go).
func give[T any](p chan T, v T) bool {
	select {
	case p <- v:
		return true
	default:
		return false
	}
}

// GetDecoder returns a decoder reading r (nil: none yet), bounded by
// MaxWindow.
func GetDecoder(r io.Reader) (*zstd.Decoder, error) {
	d, ok := take(decoders)
	if !ok {
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
	if !give(decoders, d) {
		d.Close()
	}
}

// S2BlockSize is the block size of the S2 streams the project writes, and
// the largest block a reader accepts: it bounds a reader's memory.
const S2BlockSize = 1 << 20

var (
	s2Writers = make(chan *s2.Writer, poolSize)
	s2Readers = make(chan *s2.Reader, poolSize)
)

// GetS2Writer returns an S2 stream writer to w (nil: none yet): the
// default level, on the calling goroutine, 1 MiB blocks each with the
// CRC-32C of its raw bytes.
func GetS2Writer(w io.Writer) *s2.Writer {
	if e, ok := take(s2Writers); ok {
		e.Reset(w)
		return e
	}
	return s2.NewWriter(w, s2.WriterConcurrency(1), s2.WriterBlockSize(S2BlockSize))
}

// PutS2Writer gives e back; it must not be used after.
func PutS2Writer(e *s2.Writer) {
	e.Reset(nil)
	give(s2Writers, e)
}

// GetS2Reader returns an S2 stream reader of r that checks every block's
// CRC and refuses blocks over S2BlockSize.
func GetS2Reader(r io.Reader) *s2.Reader {
	if d, ok := take(s2Readers); ok {
		d.Reset(r)
		return d
	}
	return s2.NewReader(r, s2.ReaderMaxBlockSize(S2BlockSize))
}

// PutS2Reader gives d back; it must not be used after.
func PutS2Reader(d *s2.Reader) {
	d.Reset(nil)
	give(s2Readers, d)
}
