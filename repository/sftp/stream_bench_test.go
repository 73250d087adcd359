package sftp_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"github.com/pglogship/pglogship/internal/testenv"
)

// BenchmarkStreamSFTP writes 128 MiB that arrive as a stream (no size
// known ahead, like a bundle streamed from a guest), then reads them back
// in 2 MiB reads, like the read-back before WAL leaves the guest.
func BenchmarkStreamSFTP(b *testing.B) {
	s := testenv.StartSSHD(b, testenv.SSHDConfig{})
	r := open(b, config(s, testenv.UserDir(b, s.User)+"/repo"))
	ctx := context.Background()
	data := make([]byte, 128<<20)
	rand.Read(data)
	const size = 128 << 20
	b.Run("write", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			pr, pw := io.Pipe()
			go func() { pw.Write(data); pw.Close() }()
			if err := r.Put(ctx, fmt.Sprintf("s/w%d", i), pr); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bs := range []int{32 << 10, 2 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("read-%dk", bs>>10), func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				rc, err := r.Get(ctx, "s/w0", 0, -1)
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				if _, err := io.CopyBuffer(h, struct{ io.Reader }{rc}, make([]byte, bs)); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
