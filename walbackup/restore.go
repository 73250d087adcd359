package walbackup

import (
	"context"
	"fmt"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
)

// maxChain bounds how many incremental images a chain may hold, so a
// manifest whose base points in a circle cannot loop forever.
const maxChain = 10000

// ImageChain returns what a restore of restore point id applies: its
// manifests and images from the full image to id, following each
// incremental image's base. A missing or broken link is an error. auth,
// if set (a repository written with a key), authenticates each manifest.
func ImageChain(ctx context.Context, repo repository.ListGetter, inst repository.Instance, id string, auth repository.Authenticator) ([]*repository.Manifest, []hypervisor.Image, error) {
	var ms []*repository.Manifest
	for next := id; ; {
		if len(ms) == maxChain {
			return nil, nil, fmt.Errorf("image chain of restore point %s: over %d images", id, maxChain)
		}
		m, err := repository.ReadManifest(ctx, repo, inst, next, auth)
		if err != nil {
			return nil, nil, fmt.Errorf("image chain of restore point %s: %w", id, err)
		}
		ms = append([]*repository.Manifest{m}, ms...)
		if m.Full {
			break
		}
		next = m.Base
	}
	imgs := make([]hypervisor.Image, len(ms))
	for i, m := range ms {
		if i > 0 && m.SharedImage != ms[i-1].SharedImage {
			return nil, nil, fmt.Errorf("image chain of restore point %s: %s builds on %s, and only one of them has a shared image",
				id, m.ID, ms[i-1].ID)
		}
		imgs[i] = *imageOf(m, inst)
	}
	return ms, imgs, nil
}

// auth authenticates manifests with the job's key; nil without one (not
// a nil *bundle.Key in an interface).
func (j *Job) auth() repository.Authenticator {
	if j.cfg.Key == nil {
		return nil
	}
	return j.cfg.Key
}
