// Package session defines the session records a job writes while it runs and
// the Store they are kept in: the configuration database of pglogship.
//
// A parent session is one image-level backup run of a job; a child session is
// one continuous run of the job's "<name> PostgreSQL Log Backup" child job,
// which ships WAL every interval until the next parent session or until the
// job is disabled. Each session has a state that only moves forward:
//
//	Starting → Working → Success | Warning | Failed | Stopped
//
// (Starting may also end directly.) A finished session never changes state
// again; Store.Update refuses such a transition with a *TransitionError that
// matches ErrInvalidTransition.
//
// Stores shared by several processes also implement Leaser (check with a
// type assertion): a job's lease says which process runs it, and a flag per
// job says whether it should run at all, so disabling a job anywhere stops
// it wherever it runs. walbackup.Runner takes jobs by lease. Stores that
// implement Pinner record what running restores and drills read, so expiry
// in any process leaves it alone until they end or their pins run out.
//
// Implementations live in sub-packages: session/memory keeps records in
// process memory, session/postgres in a PostgreSQL database shared by several
// processes. session/sessiontest is the conformance suite every Store must
// pass; a third-party Store runs it with one call.
//
// Session records are shown to operators: callers must never put passwords,
// keys or other secrets into them.
package session
