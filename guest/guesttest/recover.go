package guesttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/pglogship/pglogship/guest"
)

var _ guest.Recoverer = (*runtime)(nil)

// OpRecover is guest.Recoverer's Recover, for fault injection.
const OpRecover Op = "recover"

// recoveryState is what a Guest keeps for Recover.
type recoveryState struct {
	names []string // what Recover asks fetch for
	res   guest.RecoveryResult
	calls []Recovery
}

// Recovery is what one call of the fake's Recover did.
type Recovery struct {
	Config  guest.RecoveryConfig
	Files   map[string][]byte // what fetch gave, by name
	Missing []string          // asked for and not in the archive
}

// SetRecovery makes Recover ask fetch for names, in order, as a recovery's
// restore_command would, and answer res with Requests, Waited and Fetched
// counted.
// A name the archive does not hold is recorded and recovery goes on (as it
// does past a missing history file); any other fetch error fails Recover
// with guest.ErrRecoveryFailed.
func (g *Guest) SetRecovery(names []string, res guest.RecoveryResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recovery.names, g.recovery.res = append([]string(nil), names...), res
}

// Recoveries returns every Recover call so far, oldest first.
func (g *Guest) Recoveries() []Recovery {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Recovery(nil), g.recovery.calls...)
}

// Recover implements guest.Recoverer without a PostgreSQL: it records cfg
// and asks fetch for the names SetRecovery gave, one at a time.
func (r *runtime) Recover(ctx context.Context, cfg guest.RecoveryConfig, fetch guest.FetchFunc) (guest.RecoveryResult, error) {
	if err := r.enter(ctx, OpRecover, cfg.DataDir); err != nil {
		return guest.RecoveryResult{}, err
	}
	r.g.mu.Lock()
	names, res := r.g.recovery.names, r.g.recovery.res
	r.g.mu.Unlock()
	rec := Recovery{Config: cfg, Files: map[string][]byte{}}
	defer func() {
		r.g.mu.Lock()
		r.g.recovery.calls = append(r.g.recovery.calls, rec)
		r.g.mu.Unlock()
	}()
	for _, n := range names {
		var buf bytes.Buffer
		err := fetch(ctx, n, &buf)
		res.Requests++
		res.Waited++ // nothing is fetched ahead here
		switch {
		case errors.Is(err, guest.ErrNoSuchWAL):
			rec.Missing = append(rec.Missing, n)
		case err != nil:
			return res, fmt.Errorf("%w: restore_command for %s: %w", guest.ErrRecoveryFailed, n, err)
		default:
			rec.Files[n] = buf.Bytes()
			res.Fetched++
		}
	}
	return res, nil
}
