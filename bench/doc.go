// Package bench holds the comparisons `make bench` runs against the peer
// tools on one WAL corpus (1 GiB of real pgbench WAL, generated once and
// cached by internal/testenv): the archive_command against cp plus sync and
// pgBackRest's archive-push; shipping a backlog through the host over SSH
// into fs and SFTP repositories, and directly from the guest into MinIO
// over TLS and into that SFTP store over an account of its own, against pgBackRest's asynchronous push into posix, through a
// repository host over SSH and into the same MinIO, with each side's CPU
// time and peak memory (guest CPU is the machine's less the host process,
// MinIO and the sshd of the SFTP store and pgBackRest's repository host;
// that repository host counts as pgBackRest's host CPU); restore_command
// fetches against pgBackRest's asynchronous archive-get. Each benchmark runs
// its contenders in turning order, round after round, in one run (these
// machines are noisy, so pairs are compared within a run), and appends its
// rows to the summary table named by PGLOGSHIP_BENCH_TABLE.
//
// Profiling BenchmarkShip: PGLOGSHIP_BENCH_ONLY=text runs only the
// contenders whose name holds text, or one of texts separated by "|"
// (rounds as usual, no table, no memory rounds), and PGLOGSHIP_BENCH_PERF=folder records each of our ships there
// (perf of the whole machine, pprof of the host process).
package bench
