package s3

import (
	"io"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// A body closed while another goroutine reads it: the reader gets an
// error instead of the buffer's later content, and the race detector sees
// no access to the buffer after Close returns.
func TestBodyClosedUnderRead(t *testing.T) {
	buf := make([]byte, 1<<20)
	b := newBody(buf)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := make([]byte, 4096)
		for {
			if _, err := b.Read(p); err != nil {
				return
			}
		}
	}()
	b.Close()
	for i := range buf {
		buf[i] = 1 // reused at once, as the pool does
	}
	wg.Wait()
	_, err := b.Read(make([]byte, 1))
	require.ErrorIs(t, err, errBodyClosed)
	_, err = b.Seek(0, io.SeekStart)
	require.ErrorIs(t, err, errBodyClosed)
}
