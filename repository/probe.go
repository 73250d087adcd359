package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ProbePrefix is where Probe writes its object; nothing else lives there.
const ProbePrefix = "probe/"

// Probe checks that repo can be reached and written: it stores a small
// object named after now and tag under ProbePrefix, reads it back,
// compares, and deletes it. A failed step is returned wrapped with what it
// was; the probe object is removed on every path it could be written.
// Operators run it through `pglogship check`.
func Probe(ctx context.Context, repo Repository, now time.Time, tag string) (err error) {
	name := ProbePrefix + now.UTC().Format("20060102T150405.000000000Z") + "-" + tag
	if err := ValidName(name); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	want := []byte("pglogship probe " + name + "\n")
	if err := repo.Put(ctx, name, bytes.NewReader(want)); err != nil {
		return fmt.Errorf("probe: write %s: %w", name, err)
	}
	defer func() {
		if derr := repo.Delete(context.WithoutCancel(ctx), name); derr != nil {
			err = errors.Join(err, fmt.Errorf("probe: delete %s: %w", name, derr))
		}
	}()
	rc, err := repo.Get(ctx, name, 0, -1)
	if err != nil {
		return fmt.Errorf("probe: read back %s: %w", name, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(want))+1))
	if err != nil {
		return fmt.Errorf("probe: read back %s: %w", name, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("probe: %s read back %d bytes unlike the %d written", name, len(got), len(want))
	}
	return nil
}
