package session

import (
	"context"
	"time"

	"github.com/pglogship/pglogship/wal"
)

// MaxPinnedRestorePoints bounds the restore points one pin holds (an image
// chain is far shorter).
const MaxPinnedRestorePoints = 10000

// Pinner is implemented by stores that record what running restores and
// drills read, so that expiry, in whichever process it runs, leaves it
// alone: a restore pins the restore points of its image chain and the WAL
// after them before it reads them, renews the pin while it runs and removes
// it when done; expiry skips what a pin in force holds. A pin runs out at
// its Until, so a restore that crashed blocks expiry only that long. Check
// for it with a type assertion.
//
// Times are the caller's, as for Leaser: Pins compares Until with the now
// it is given, from the caller's injected clock. Every method is atomic and
// safe for concurrent use, also by several store values (processes) on one
// database. Input that breaks ValidatePin, or a zero now, gives an error
// matching ErrInvalid and changes nothing. A canceled context gives its
// error and changes nothing.
type Pinner interface {
	// Pin records p, replacing the pin with the same Job and ID if there is
	// one (a renewal: a later Until). p.Until must be after now. Pins of
	// p.Job that ran out at now may be deleted. Idempotent.
	Pin(ctx context.Context, p Pin, now time.Time) error

	// Unpin removes the pin id of job. A pin that does not exist (removed
	// already, run out and deleted) is no error: idempotent.
	Unpin(ctx context.Context, job, id string) error

	// Pins returns the pins of job in force at now (Until after now), in
	// order of their ID; none is an empty result, not an error.
	Pins(ctx context.Context, job string, now time.Time) ([]Pin, error)
}

// Pin is what one running restore or drill reads: the images of
// RestorePoints, and the WAL from StartLSN on Timeline onwards, with the
// timelines that branch off it after StartLSN.
type Pin struct {
	Job      string // the parent job's name
	ID       string // unique within the job (NewID)
	Purpose  string // what holds it, for operators: "restore", "drill"
	Machine  string
	SystemID uint64
	// RestorePoints are the ids of the restore points whose images it
	// reads: an image chain, full image first.
	RestorePoints []string
	Timeline      uint32
	StartLSN      wal.LSN
	Until         time.Time // when it runs out unless renewed; UTC, microseconds
}

// Held reports whether p is in force at now.
func (p Pin) Held(now time.Time) bool { return now.Before(p.Until) }

// ValidatePin checks a pin given to Pinner.Pin at now. Pinners call it so
// every implementation refuses the same input.
func ValidatePin(p Pin, now time.Time) error {
	if err := ValidateJobName(p.Job); err != nil {
		return err
	}
	switch {
	case p.ID == "" || len(p.ID) > MaxNameLen:
		return invalid("pin id must be 1 to %d bytes", MaxNameLen)
	case len(p.Purpose) > MaxNameLen || len(p.Machine) > MaxNameLen:
		return invalid("pin purpose and machine are at most %d bytes", MaxNameLen)
	case now.IsZero():
		return invalid("pin needs the current time")
	case !now.Before(p.Until):
		return invalid("pin runs out at %v, not after now (%v)", p.Until, now)
	case len(p.RestorePoints) > MaxPinnedRestorePoints:
		return invalid("a pin holds at most %d restore points", MaxPinnedRestorePoints)
	}
	for _, id := range p.RestorePoints {
		if id == "" || len(id) > MaxNameLen {
			return invalid("pinned restore point ids must be 1 to %d bytes", MaxNameLen)
		}
	}
	return nil
}

// ValidateUnpin checks the arguments of Pinner.Unpin.
func ValidateUnpin(job, id string) error {
	if err := ValidateJobName(job); err != nil {
		return err
	}
	if id == "" || len(id) > MaxNameLen {
		return invalid("pin id must be 1 to %d bytes", MaxNameLen)
	}
	return nil
}

// ValidatePinsQuery checks the arguments of Pinner.Pins.
func ValidatePinsQuery(job string, now time.Time) error {
	if err := ValidateJobName(job); err != nil {
		return err
	}
	if now.IsZero() {
		return invalid("pins need the current time")
	}
	return nil
}
