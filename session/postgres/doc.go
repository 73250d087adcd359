// Package postgres is a session.Store kept in a PostgreSQL database through
// a pgx connection pool.
//
// Open creates its schema (default "pglogship") and applies any missing
// migrations in order, under an advisory lock, so several processes may open
// the same database at once. All of them may then read and write sessions
// concurrently: state changes are checked and written in one transaction
// with the row locked, and log sequence numbers come from one atomic
// statement, so no entry is lost or numbered twice.
//
// Store also implements session.Leaser, so processes sharing the database
// take jobs by lease: acquiring, renewing and releasing a lease are each one
// statement on the job's row in the leases table (INSERT ... ON CONFLICT DO
// UPDATE ... WHERE free, run out or the holder's own), so two processes never
// hold one job, and the fencing token grows with every new holder. Whether a
// lease ran out is decided with the caller's clock, never the database's.
// It implements session.Pinner too, in the pins table: the pins running
// restores and drills hold on what they read, which expiry in every process
// sees. And session.Roster, in the runners table: one row per process
// sharing the store, its announcement renewed at every poll; rows run out
// a day ago are dropped by the next announcement.
//
// The database may restart under a running process: a statement that
// fails because its pooled connection died with the old server (it never
// ran) is sent once more on a new connection, after the pool's idle
// connections are dropped; a write that fails otherwise is returned. Only a
// connection lost while a COMMIT was on its way is ambiguous: an update or
// lease call sent again is idempotent, a log entry could then be recorded
// twice, and a session created twice gives session.ErrExists.
//
// The connection string may hold a password; it is never logged nor placed
// in an error.
package postgres
