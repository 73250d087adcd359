package asyncw

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// Whatever the write sizes, the underlying writer sees the same bytes in
// the same order.
func TestSameBytesInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	var reused *Writer
	for _, size := range []int{1, 7, 4096, 1 << 20, 0} {
		h := sha256.New()
		a := reused
		if size > 0 {
			a = New(size, 3)
		}
		a.Reset(h) // a used one is reused with its buffers
		for p := data; len(p) > 0; {
			n := min(len(p), 1+rng.IntN(100000))
			w, err := a.Write(p[:n])
			require.NoError(t, err)
			require.Equal(t, n, w)
			p = p[n:]
		}
		require.NoError(t, a.Close())
		require.Equal(t, sha256.Sum256(data), [32]byte(h.Sum(nil)), "buffer size %d", size)
		if size == 1 {
			reused = a
		}
	}
}

type failing struct{ after int }

func (f *failing) Write(p []byte) (int, error) {
	if f.after -= len(p); f.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

// The underlying writer's error reaches Close, and writing on after it
// neither blocks nor panics.
func TestErrorReachesClose(t *testing.T) {
	a := New(8, 2)
	_, err := a.Write([]byte{1})
	require.Error(t, err, "idle until Reset")
	require.NoError(t, a.Close(), "closing an idle writer")
	a.Reset(&failing{after: 10})
	for i := 0; i < 100; i++ {
		_, err := a.Write(bytes.Repeat([]byte{1}, 5))
		require.NoError(t, err)
	}
	require.ErrorContains(t, a.Close(), "disk full")
	require.ErrorContains(t, a.Close(), "disk full", "Close twice")
	_, err = a.Write([]byte{1})
	require.Error(t, err)
}
