package session

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrLeaseLost is returned by Leaser.RenewLease when the lease is no longer
// the caller's: it ran out and another holder took it, or it was released.
// Whoever gets it must stop the job at once.
var ErrLeaseLost = errors.New("job lease lost")

// ErrFenced is returned by the writes of a fenced store (Fencer) when the
// lease they are fenced with is no longer its job's: another holder took
// it over, or it was released. Nothing was written. It matches
// ErrLeaseLost too, so a writer that sees it stops the job.
var ErrFenced = fmt.Errorf("write refused, fenced off by a newer holder of the job's lease: %w", ErrLeaseLost)

// Fencer is implemented by Leasers that can fence writes: a process that
// lost a job's lease (paused past its end, cut off from the database)
// must not record anything for the job once another process took it over.
// Check for it with a type assertion.
type Fencer interface {
	// Fenced returns a view of the store whose writes (Create, Update,
	// Append) are accepted only while l is still its job's lease: the same
	// holder and token, whether or not it ran out (a lease that ran out
	// but was taken by no one is still l's, as for RenewLease). The check
	// and the write are atomic, also across processes: a takeover either
	// sees the write or refuses it. Otherwise the write changes nothing and
	// returns an error matching ErrFenced. Reads are not fenced. A lease
	// with no job or holder gives ErrInvalid at the first write.
	Fenced(l Lease) Store
}

// Leaser is implemented by stores that several processes share, so that
// each job runs in exactly one of them: a process runs a job only while it
// holds the job's lease, renews it well before it runs out, and another
// process takes the job over once a lease runs out unrenewed (its holder
// died, hung or lost the database). Check for it with a type assertion.
//
// Times are the caller's: every method that decides whether a lease has run
// out compares the lease's Until with the now it is given, taken from the
// caller's injected clock, never with the database's clock. So the hosts'
// clocks must agree to well within the lease's time to live: a host whose
// clock runs s ahead of the holder's takes the job over s early. A holder
// that renews every ttl/3 and stops its job when it cannot renew before
// Until minus ttl/3 (as walbackup.Runner does) stays safe while the clocks
// differ by less than ttl/3 less the time the job takes to stop; with the
// default 30 s lease, keep them within a few seconds (NTP keeps them within
// milliseconds).
//
// Every method is atomic and safe for concurrent use, also by several store
// values (processes) on one database: of concurrent AcquireLease calls for
// one job at most one gets it. Job and holder names are 1 to MaxNameLen
// bytes and ttl is positive, else the error matches ErrInvalid. A canceled
// context gives its error and changes nothing.
type Leaser interface {
	// AcquireLease claims job's lease for holder until now+ttl when the
	// lease is free (never taken, released, or run out at now) or already
	// holder's, and returns it with ok true. A new holder gets a fencing
	// token greater than any the job's lease had before; holder acquiring
	// its own lease again (running or run out, but not taken by anyone
	// since) keeps its token and only extends it. While another holder's
	// lease runs, ok is false and nothing changes; the Lease returned then
	// is that holder's as last seen (zero when unknown), so the caller
	// learns when it runs out. Idempotent for the holder.
	AcquireLease(ctx context.Context, job, holder string, now time.Time, ttl time.Duration) (l Lease, ok bool, err error)

	// RenewLease extends a lease the caller holds to now+ttl and returns
	// it. The lease must still be l's: same holder and token. A lease that
	// ran out but was taken by no one since is still the caller's and is
	// renewed. ErrLeaseLost when another holder took it or it was
	// released. Idempotent.
	RenewLease(ctx context.Context, l Lease, now time.Time, ttl time.Duration) (Lease, error)

	// ReleaseLease gives the lease up, so another holder can take it at
	// once instead of when it runs out. A lease no longer l's (released
	// already, or taken over) is left alone and the call returns nil:
	// idempotent.
	ReleaseLease(ctx context.Context, l Lease) error

	// SetJobEnabled records whether job should run: the wanted state every
	// process reads, so disabling a job anywhere stops it wherever it
	// runs. Idempotent; the last write wins.
	SetJobEnabled(ctx context.Context, job string, enabled bool) error

	// JobEnabled reports what SetJobEnabled last recorded for job; false
	// for a job never set.
	JobEnabled(ctx context.Context, job string) (bool, error)
}

// Lease is a holder's claim on a job, as a Leaser returns it.
type Lease struct {
	Job    string
	Holder string // who holds it, unique per process
	// Token is the fencing token: it grows with every new holder of the
	// job's lease and stays the same while one holder renews it, so of two
	// parties that both believe they hold the lease the one with the greater
	// token is right.
	Token int64
	Until time.Time // when the lease runs out unless renewed; UTC, microseconds
}

// Held reports whether l is in force at now: it has a holder and has not
// run out.
func (l Lease) Held(now time.Time) bool { return l.Holder != "" && now.Before(l.Until) }

// ValidateLeaseRequest checks the arguments of AcquireLease, and of
// RenewLease with the lease's job and holder. Leasers call it so every
// implementation refuses the same input with ErrInvalid.
func ValidateLeaseRequest(job, holder string, now time.Time, ttl time.Duration) error {
	if err := ValidateLease(Lease{Job: job, Holder: holder}); err != nil {
		return err
	}
	switch {
	case now.IsZero():
		return invalid("lease needs the current time")
	case ttl <= 0:
		return invalid("lease time to live must be positive, not %v", ttl)
	}
	return nil
}

// ValidateLease checks the job and holder of a lease given to ReleaseLease.
func ValidateLease(l Lease) error {
	if err := ValidateJobName(l.Job); err != nil {
		return err
	}
	if l.Holder == "" || len(l.Holder) > MaxNameLen {
		return invalid("lease holder must be 1 to %d bytes", MaxNameLen)
	}
	return nil
}

// ValidateJobName checks the job name given to SetJobEnabled and
// JobEnabled.
func ValidateJobName(job string) error {
	if job == "" || len(job) > MaxNameLen {
		return invalid("job name must be 1 to %d bytes", MaxNameLen)
	}
	return nil
}

// LeaseBatcher is implemented by Leasers that answer a poll of many jobs
// in a few round trips (check with a type assertion). A walbackup.Runner
// polls every job it lists each LeaseTTL/3; without a LeaseBatcher that is
// two calls per job and poll, with one it is two calls per poll, whatever
// the number of jobs, and an AcquireLease only for a job whose lease is
// free or ran out.
type LeaseBatcher interface {
	// JobStates reports, for each of jobs in that order, what
	// JobEnabled reports and the job's lease as the store holds it now:
	// the zero Lease (but for Job) when never taken, an empty Holder when
	// released. At most MaxBatch jobs; names as for Leaser.
	JobStates(ctx context.Context, jobs []string) ([]JobState, error)

	// RenewLeases renews each of ls as RenewLease would, atomically per
	// lease, in one round trip: renewed[i] is ls[i] renewed, or the zero
	// Lease when lost[i] (another holder took it, or it was released).
	// At most MaxBatch leases. An error concerns the whole call: nothing
	// is known then of any lease.
	RenewLeases(ctx context.Context, ls []Lease, now time.Time, ttl time.Duration) (renewed []Lease, lost []bool, err error)
}

// MaxBatch is the most jobs or leases one LeaseBatcher call takes.
const MaxBatch = 1000

// JobState is a job's shared state as LeaseBatcher.JobStates reads it.
type JobState struct {
	Job     string
	Enabled bool
	Lease   Lease // Holder empty: free
}

// ValidateBatch checks the size and the job names of a LeaseBatcher call,
// for stores to share.
func ValidateBatch(jobs []string) error {
	if len(jobs) > MaxBatch {
		return fmt.Errorf("%w: %d jobs in one call, at most %d", ErrInvalid, len(jobs), MaxBatch)
	}
	for _, j := range jobs {
		if err := ValidateJobName(j); err != nil {
			return err
		}
	}
	return nil
}

// Roster is implemented by Leasers through which the processes sharing a
// store see each other (check with a type assertion). A walbackup.Runner
// announces itself at every poll and runs no more than its share of the
// enabled jobs, so jobs spread evenly over the live processes and move to
// one that joins; without a Roster each Runner takes whatever is free when
// it polls.
//
// Announcements run out on the callers' clocks, as leases do. Holder names
// are as for Leaser; a zero time is refused with ErrInvalid. Safe for
// concurrent use by several store values on one database.
type Roster interface {
	// Announce records holder as present until until, replacing what it
	// recorded before. Idempotent.
	Announce(ctx context.Context, holder string, until time.Time) error

	// Present returns the holders whose announcement runs past now,
	// sorted, at most MaxBatch of them.
	Present(ctx context.Context, now time.Time) ([]string, error)

	// Withdraw removes holder's announcement, for a process that stops.
	// Idempotent.
	Withdraw(ctx context.Context, holder string) error
}

// ValidateAnnouncement checks a Roster call's holder and, when needTime,
// its time, so every store refuses the same input with ErrInvalid.
func ValidateAnnouncement(holder string, t time.Time, needTime bool) error {
	if holder == "" || len(holder) > MaxNameLen {
		return invalid("holder must be 1 to %d bytes", MaxNameLen)
	}
	if needTime && t.IsZero() {
		return invalid("announcement needs a time")
	}
	return nil
}
