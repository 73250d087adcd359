package testenv

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
)

// PutBundle streams the files at paths into one bundle stored as name, the
// way the child job ships a batch: no file is held in memory whole.
func PutBundle(ctx context.Context, repo repository.Repository, name string, paths []string, key *bundle.Key) error {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeBundle(pw, name, paths, key))
	}()
	err := repo.Put(ctx, name, pr)
	pr.CloseWithError(err)
	return err
}

func writeBundle(w io.Writer, name string, paths []string, key *bundle.Key) error {
	bw, err := bundle.NewWriter(w, name, key)
	if err != nil {
		return err
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = bw.Add(filepath.Base(p), bundle.Raw, bufio.NewReaderSize(f, 256<<10))
		f.Close()
		if err != nil {
			return err
		}
	}
	_, err = bw.Close()
	return err
}

// RawSize is the total size of the files at paths.
func RawSize(paths []string) (int64, error) {
	var n int64
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		n += st.Size()
	}
	return n, nil
}
