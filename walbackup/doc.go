// Package walbackup runs a backup job that contains PostgreSQL machines: the
// parent job's image sessions and the child job ("<name> PostgreSQL Log
// Backup") that ships WAL every interval. It composes the contracts of
// packages hypervisor, guest, repository and session and imports none of
// their implementations.
//
// A Job runs the lifecycle in one goroutine, on the injected clock:
//
//   - Enable starts child session 1 (the runtime is deployed into every
//     guest and archiving is prepared);
//   - every LogBackupInterval, ShipOnce moves each guest's waiting WAL into
//     one verified bundle per machine, and the session records the batch;
//   - a parent run (on the Schedule or StartParent) first ends the child
//     session (a last ship, runtimes stopped and uninstalled), takes the
//     images, then starts the next child session, which warns when the
//     parent failed;
//   - Disable ends the child session the same way and returns when it is
//     done.
//
// Still to come: application-aware images with restore point manifests
// (backup mode), gap and folder-filling warnings, and repository outage
// backoff within an interval.
package walbackup
