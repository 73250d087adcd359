package memory

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/pglogship/pglogship/session"
)

var _ session.Pinner = (*Store)(nil)

// Pin implements session.Pinner.
func (m *Store) Pin(ctx context.Context, p session.Pin, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := session.ValidatePin(p, now); err != nil {
		return err
	}
	p.Until = session.Normalize(p.Until)
	p.RestorePoints = slices.Clone(p.RestorePoints)
	now = session.Normalize(now)
	m.mu.Lock()
	defer m.mu.Unlock()
	pins := m.pins[p.Job]
	if pins == nil {
		pins = map[string]session.Pin{}
		m.pins[p.Job] = pins
	}
	for id, q := range pins {
		if !q.Held(now) {
			delete(pins, id) // a crashed restore's
		}
	}
	pins[p.ID] = p
	return nil
}

// Unpin implements session.Pinner.
func (m *Store) Unpin(ctx context.Context, job, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := session.ValidateUnpin(job, id); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.pins[job], id)
	m.mu.Unlock()
	return nil
}

// Pins implements session.Pinner.
func (m *Store) Pins(ctx context.Context, job string, now time.Time) ([]session.Pin, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := session.ValidatePinsQuery(job, now); err != nil {
		return nil, err
	}
	m.mu.Lock()
	out := []session.Pin{}
	for _, p := range m.pins[job] {
		if p.Held(now) {
			p.RestorePoints = slices.Clone(p.RestorePoints)
			out = append(out, p)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b session.Pin) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
