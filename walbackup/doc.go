// Package walbackup runs a backup job that contains PostgreSQL machines: the
// parent job's image sessions and the child job ("<name> PostgreSQL Log
// Backup") that ships WAL every interval. It composes the contracts of
// packages hypervisor, guest, repository and session and imports none of
// their implementations.
//
// A Job runs the lifecycle in one goroutine, on the injected clock:
//
//   - Enable (or Run, which ties the job to a context) starts child
//     session 1: the runtime is deployed into every guest and archiving is
//     prepared; sessions a dead host left running are closed as failed;
//   - every LogBackupInterval, ShipOnce moves each guest's waiting WAL into
//     one verified bundle per machine and timeline, and the session records
//     the batch (files, bytes, first and last segment, LSN range);
//   - a failed ship (repository or guest unreachable) keeps the WAL in the
//     guest, warns once per interval with an estimate of when the guest's
//     temporary folder fills up, and is retried after RetryDelay, doubling,
//     until the next interval;
//   - a gap in a timeline's segments, checked across sessions from what
//     the repository holds, is a warning;
//   - every guest, repository and store call is bounded by
//     OperationTimeout of silence, so a hung guest cannot block the job;
//   - a parent run (on the Schedule: Daily, with days of the week, or
//     EveryHours; or StartParent, one at a time) first ends the child
//     session (a last ship, runtimes stopped and uninstalled), then takes a
//     restore point of every machine: PostgreSQL in backup mode around the
//     hypervisor's image, the WAL from the backup's start to its stop
//     shipped, and only then the manifest, which commits the restore point
//     (a failure leaves none). The next child session warns when the parent
//     failed, or when no restore point exists at all. A run missed while
//     the host program was down runs once at start-up;
//   - Disable ends the child session the same way and returns when it is
//     done; when Run's context ends the session stops at once instead.
//
// The Observer sees sessions start and end, batches (bytes and lag) and
// warnings, for metrics; Progress sees image exports and restores move on
// and each WAL file a recovery fetches, for progress bars. Expire applies
// the retention, ExpireDryRun says what it would remove.
//
// A Runner runs many jobs in one process and shares them with other
// processes on one session store that implements session.Leaser (the
// PostgreSQL store does): a job runs only where its lease is held, renewed
// every LeaseTTL/3, and moves to another process when its lease runs out
// (its process died or hung), at most LeaseTTL after the last renewal. A
// shared flag per job (Runner.Enable, Runner.Disable, from any process)
// says whether it runs at all. Each session's log names the process that
// ran it and its lease's fencing token. When the store implements
// session.Fencer (both of this module's do), a job's session writes are
// fenced with its lease: once another process took the job over, a stale
// run's writes are refused (session.ErrFenced) and the run stops.
//
// Restores: Interval tells what an instance can be restored to; Plan checks
// a target (latest, consistent, a time, an LSN, a transaction, a named
// restore point) against the repository and the WAL summaries the child
// job stored, and picks the restore point, before anything is written;
// Restore writes the image chain through the hypervisor and has the guest's
// runtime start PostgreSQL in recovery, fetching WAL from the repository
// (FetchWAL) and ahead of it, also onto another machine (its PostgreSQL
// release checked first); Drill proves a restore point in a scratch
// location; Export dumps databases at a point in time with the guest's own
// pg_dump; Publish runs an instance straight from the backup (a qcow2
// overlay on the stored chain for disk images) until Unpublish. Each is
// recorded as a restore session (RestoreJobName). Expire applies the
// Retention after each parent session; Verify checks the whole repository.
package walbackup
