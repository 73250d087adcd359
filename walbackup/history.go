package walbackup

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
)

// A timeline history file is stored as its own small object: as written
// by PostgreSQL in a repository without a key, and with a key as a bundle
// of that one file sealed for the object's name, so that nobody without
// the key can plant a history that sends recovery down another timeline.

// maxSealedHistory bounds a sealed history object: the file and a
// bundle's header, index and trailer.
const maxSealedHistory = maxHistory + 64<<10

// encodeHistory returns what is stored under obj for the history file
// name: content itself, or with a key a bundle sealed for obj.
func encodeHistory(obj, name string, content []byte, key *bundle.Key) ([]byte, error) {
	if key == nil {
		return content, nil
	}
	var buf bytes.Buffer
	w, err := bundle.NewWriter(&buf, obj, key)
	if err != nil {
		return nil, err
	}
	if _, err := w.Add(name, bundle.Raw, bytes.NewReader(content)); err != nil {
		return nil, err
	}
	if _, err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readHistoryObject reads the history file name stored as obj and returns
// its content. With a key only a sealed one is read (bundle.ErrNotEncrypted
// for one in clear); without, a sealed one is bundle.ErrKeyRequired. Over
// maxHistory is an error, never cut off.
func readHistoryObject(ctx context.Context, repo repository.Getter, obj, name string, key *bundle.Key) ([]byte, error) {
	rc, err := repo.Get(ctx, obj, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	limit := int64(maxHistory)
	if key != nil {
		limit = maxSealedHistory
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("history file %s: over %d bytes", obj, limit)
	}
	sealed := bundle.IsBundle(b)
	switch {
	case key == nil && sealed:
		return nil, fmt.Errorf("history file %s: %w", obj, bundle.ErrKeyRequired)
	case key == nil:
		return b, nil
	case !sealed:
		return nil, fmt.Errorf("history file %s: %w: refused, it could be forged", obj, bundle.ErrNotEncrypted)
	}
	r, err := bundle.OpenBytes(ctx, b, obj, key)
	if err == nil {
		b, err = r.ReadFile(ctx, name, maxHistory)
	}
	if err != nil {
		return nil, fmt.Errorf("history file %s: %w", obj, err)
	}
	return b, nil
}
