// Package bench holds the comparisons `make bench` runs against the peer
// tools on one WAL corpus (1 GiB of real pgbench WAL, generated once and
// cached by internal/testenv): the archive_command against cp plus sync and
// pgBackRest's archive-push; shipping a backlog over SSH into fs and SFTP
// repositories against pgBackRest's asynchronous push; restore_command
// fetches against pgBackRest's asynchronous archive-get. Each benchmark runs
// its contenders in turning order, round after round, in one run (these
// machines are noisy, so pairs are compared within a run), and appends its
// rows to the summary table named by PGLOGSHIP_BENCH_TABLE.
package bench
