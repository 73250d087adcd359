package walbackup_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/walbackup"
)

// With Shipping.Compression S2, the guest compresses real WAL with S2 on
// both paths (bundled in the guest and put straight into MinIO; streamed
// through the host into a folder), every segment is stored as an S2 frame,
// and restores from that WAL are row-exact to the latest state and to
// random times.
func TestS2CompressedWALShipsAndRestores(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		direct bool
	}{{"direct into MinIO", true}, {"through the host into a folder", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var repo repository.Repository
			f := newPITRFixture(t, pitrWorkload{txns: 40, tweak: func(cfg *walbackup.Config) {
				cfg.Shipping.Compression = guest.CodecS2
				cfg.Shipping.Mode = walbackup.ShipHost
				if tc.direct {
					_, _, s3repo := minIOBucketRepo(t, "")
					cfg.Repository, cfg.Shipping.Mode = s3repo, walbackup.ShipDirect
				}
				repo = cfg.Repository
			}})
			ctx := context.Background()
			refs, err := repository.Bundles(ctx, repo, f.instance(t), 1)
			require.NoError(t, err)
			require.NotEmpty(t, refs)
			segments := 0
			for _, ref := range refs {
				r, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, nil)
				require.NoError(t, err)
				for _, e := range r.Entries() {
					assert.Equal(t, bundle.S2, e.Codec, "%s in %s", e.Name, ref.Object.Name)
					segments++
				}
			}
			assert.Greater(t, segments, 2)

			pg, res, err := f.restore(t, walbackup.Latest())
			require.NoError(t, err, "%s", res.Recovery.Log)
			assert.Equal(t, f.want(len(f.txns)), items(t, pg), "every shipped transaction")
			pg.Stop(t)
			f.restoreAtRandom(t, 4, 2, []int{f.namedAt}, nil)
		})
	}
}
