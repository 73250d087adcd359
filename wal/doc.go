// Package wal holds the small PostgreSQL write-ahead log vocabulary the rest
// of pglogship shares: log sequence numbers, segment and history file names
// and their headers as the repository and guest packages need them, and a
// Reader that reads the records of archived segments without PostgreSQL
// (PostgreSQL 13 to 18) and sums up what they hold for restores: commit
// times, transaction ids and named restore points.
package wal
