// Package walbackup runs a backup job that contains PostgreSQL machines: the
// parent job's image sessions and the child job ("<name> PostgreSQL Log
// Backup") that ships WAL every interval. It composes the contracts of
// packages hypervisor, guest, repository and session and imports none of
// their implementations.
//
// This package is being built up: ShipOnce, the body of the child job's
// loop, exists; the Job type with its schedule and session lifecycle comes
// next.
package walbackup
