package sftp_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
)

// BenchmarkWriteReadSFTP ships 1 GiB of real WAL as one bundle through the
// real sshd on loopback, then reads every segment back.
func BenchmarkWriteReadSFTP(b *testing.B) {
	paths := testenv.WALCorpus(b, 64)
	raw, err := testenv.RawSize(paths)
	if err != nil {
		b.Fatal(err)
	}
	s := testenv.StartSSHD(b, testenv.SSHDConfig{})
	r := open(b, config(s, testenv.UserDir(b, s.User)+"/repo"))
	ctx := context.Background()
	b.Run("write", func(b *testing.B) {
		b.SetBytes(raw)
		for i := 0; i < b.N; i++ {
			if err := testenv.PutBundle(ctx, r, fmt.Sprintf("wal/w%d.bundle", i), paths, nil); err != nil {
				b.Fatal(err)
			}
		}
		o, err := r.Stat(ctx, "wal/w0.bundle")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(raw)/float64(o.Size), "ratio")
	})
	b.Run("read", func(b *testing.B) {
		o, err := r.Stat(ctx, "wal/w0.bundle")
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(raw)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			br, err := bundle.Open(ctx, r, o.Name, o.Size, nil)
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range br.Entries() {
				if _, err := br.WriteFile(ctx, e.Name, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
