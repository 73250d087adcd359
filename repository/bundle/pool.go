package bundle

import (
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/pglogship/pglogship/internal/asyncw"
)

// Encoders and decoders are reused: each holds megabytes of window
// buffers, and a job writes a bundle per machine every interval and reads
// every frame back. The pools are bounded, so a burst of many machines
// shipping at once does not stay in memory afterwards.
const poolSize = 2

var (
	encoders = make(chan *zstd.Encoder, poolSize)
	decoders = make(chan *zstd.Decoder, 2*poolSize)
	hashers  = make(chan *asyncw.Writer, poolSize)
)

// getHasher returns an idle asyncw.Writer with 1 MiB of buffers.
func getHasher() *asyncw.Writer {
	select {
	case h := <-hashers:
		return h
	default:
		return asyncw.New(256<<10, 4)
	}
}

func putHasher(h *asyncw.Writer) {
	select {
	case hashers <- h:
	default:
	}
}

func getEncoder() (*zstd.Encoder, error) {
	select {
	case e := <-encoders:
		return e, nil
	default:
		return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	}
}

func putEncoder(e *zstd.Encoder) {
	e.Reset(nil)
	select {
	case encoders <- e:
	default: // the pool is full: let it go
	}
}

// getDecoder returns a decoder reading r (nil: none yet).
func getDecoder(r io.Reader) (*zstd.Decoder, error) {
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

func putDecoder(d *zstd.Decoder) {
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
