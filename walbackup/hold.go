package walbackup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
)

// RestorePinTTL is how long the pin of a running restore or drill lasts
// unless renewed. It is renewed every third of it while the restore runs,
// so a restore whose process died holds what it read for at most this
// long.
const RestorePinTTL = 10 * time.Minute

// Hold is a running restore's pin on what it reads: the images of its
// plan's chain and the WAL after its restore point. Expiry leaves both
// alone while the pin is in force.
type Hold struct {
	j    *Job
	pin  session.Pin
	stop context.CancelFunc
	done chan struct{}
	once sync.Once
}

// Hold pins what plan reads, in the session store when it implements
// session.Pinner (then expiry in every process sharing it sees the pin;
// otherwise only this Job's expiry does), and then checks that the plan's
// restore points are still committed: one expired before the pin was taken
// gives ErrNoRestorePoint, and nothing stays pinned. The pin is renewed on
// the job's clock until Release. Restore and Drill hold their plans
// themselves; a caller that runs RestoreImage and Recover on its own holds
// the plan around them. purpose says who holds it ("restore", "drill"),
// for operators.
func (j *Job) Hold(ctx context.Context, plan *Plan, purpose string) (*Hold, error) {
	ids := make([]string, len(plan.Manifests))
	for i, m := range plan.Manifests {
		ids[i] = m.ID
	}
	now := j.cfg.Clock.Now()
	p := session.Pin{Job: j.cfg.Name, ID: session.NewID(), Purpose: purpose, Machine: plan.Instance.Machine,
		SystemID: plan.Instance.SystemID, RestorePoints: ids, Timeline: plan.RestorePoint.Timeline,
		StartLSN: plan.RestorePoint.StartLSN, Until: now.Add(RestorePinTTL)}
	octx, cancel := j.op(ctx)
	err := j.pins.Pin(octx, p, now)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s of restore point %s: pin it against expiry: %w", purpose, plan.RestorePoint.ID, err)
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h := &Hold{j: j, pin: p, stop: stop, done: make(chan struct{})}
	go h.renew(rctx)
	// An expiry that read the pins before this one was written may have
	// removed a manifest the plan was made from; one that removes a
	// manifest after this reads the pins again and keeps the objects.
	ms, _, err := ImageChain(ctx, j.cfg.Repository, plan.Instance, plan.RestorePoint.ID, j.auth())
	if err == nil && !slices.EqualFunc(ms, plan.Manifests, func(a, b *repository.Manifest) bool { return a.ID == b.ID }) {
		err = errors.New("its image chain changed")
	}
	if err != nil {
		h.Release(ctx)
		return nil, fmt.Errorf("%s of restore point %s: %w: expired as the %s started (%v)", purpose, plan.RestorePoint.ID,
			ErrNoRestorePoint, purpose, err)
	}
	return h, nil
}

// renew extends the pin every third of its time to live until ctx ends.
func (h *Hold) renew(ctx context.Context) {
	defer close(h.done)
	j := h.j
	t := j.cfg.Clock.Ticker(RestorePinTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := j.cfg.Clock.Now()
		p := h.pin
		p.Until = now.Add(RestorePinTTL)
		octx, cancel := j.op(ctx)
		err := j.pins.Pin(octx, p, now)
		cancel()
		if err != nil && ctx.Err() == nil {
			// Retried at the next tick; expiry may remove what the restore
			// reads once the pin has run out.
			j.cfg.Logger.Warn("renew the pin of a running "+p.Purpose, "job", j.cfg.Name, "machine", p.Machine,
				"restore_point", p.RestorePoints[len(p.RestorePoints)-1], "until", h.pin.Until, "err", err)
			continue
		}
		h.pin.Until = p.Until
	}
}

// Release removes the pin and stops renewing it. Idempotent. A pin that
// cannot be removed runs out by itself; that is logged.
func (h *Hold) Release(ctx context.Context) {
	h.once.Do(func() {
		h.stop()
		<-h.done
		octx, cancel := h.j.op(context.WithoutCancel(ctx))
		defer cancel()
		if err := h.j.pins.Unpin(octx, h.pin.Job, h.pin.ID); err != nil {
			h.j.cfg.Logger.Warn("remove the pin of a "+h.pin.Purpose+": it runs out by itself", "job", h.pin.Job,
				"machine", h.pin.Machine, "until", h.pin.Until, "err", err)
		}
	})
}

// pinsOf returns the pins in force of inst's restores and drills.
func (j *Job) pinsOf(ctx context.Context, inst repository.Instance) ([]session.Pin, error) {
	octx, cancel := j.op(ctx)
	defer cancel()
	all, err := j.pins.Pins(octx, j.cfg.Name, j.cfg.Clock.Now())
	if err != nil {
		return nil, fmt.Errorf("read the pins of running restores: %w", err)
	}
	var out []session.Pin
	for _, p := range all {
		if p.Machine == inst.Machine && p.SystemID == inst.SystemID {
			out = append(out, p)
		}
	}
	return out, nil
}

// heldBy returns the pin that holds restore point id, if one does.
func heldBy(pins []session.Pin, id string) (session.Pin, bool) {
	for _, p := range pins {
		if slices.Contains(p.RestorePoints, id) {
			return p, true
		}
	}
	return session.Pin{}, false
}

// localPins holds pins in the Job when its session store is not a
// session.Pinner: its restores and its expiry then coordinate within this
// process only.
type localPins struct {
	mu   sync.Mutex
	pins map[string]session.Pin // by job and id
}

var _ session.Pinner = (*localPins)(nil)

func (l *localPins) Pin(_ context.Context, p session.Pin, now time.Time) error {
	if err := session.ValidatePin(p, now); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pins == nil {
		l.pins = map[string]session.Pin{}
	}
	for k, q := range l.pins {
		if !q.Held(now) {
			delete(l.pins, k)
		}
	}
	p.RestorePoints = slices.Clone(p.RestorePoints)
	l.pins[p.Job+"\x00"+p.ID] = p
	return nil
}

func (l *localPins) Unpin(_ context.Context, job, id string) error {
	l.mu.Lock()
	delete(l.pins, job+"\x00"+id)
	l.mu.Unlock()
	return nil
}

func (l *localPins) Pins(_ context.Context, job string, now time.Time) ([]session.Pin, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []session.Pin
	for _, p := range l.pins {
		if p.Job == job && p.Held(now) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b session.Pin) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
