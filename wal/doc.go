// Package wal holds the small PostgreSQL write-ahead log vocabulary the rest
// of pglogship shares: log sequence numbers now, segment and history file
// names as the repository and guest packages need them.
package wal
