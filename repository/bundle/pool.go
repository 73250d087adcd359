package bundle

import (
	"github.com/pglogship/pglogship/internal/asyncw"
)

// Hashers are reused like the zstd encoders and decoders (internal/zpool):
// a job writes a bundle per machine every interval, and the pool is
// bounded, so a burst of many machines shipping at once does not stay in
// memory afterwards.
var hashers = make(chan *asyncw.Writer, 2)

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
