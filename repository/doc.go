// Package repository defines where restore points and shipped WAL live: a
// Repository is a flat store of named, immutable objects that survive a
// crash once stored.
//
// The contract is deliberately small (put, ranged get, stat, list, delete)
// so object stores, file systems and SFTP servers can all implement it. The
// on-disk format that pglogship writes on top of it (restore point
// manifests, WAL bundles, catalogs) is specified in docs/repository-format.md
// and implemented by free functions over this interface.
//
// Implementations: repository/memory (in process, for tests), repository/fs,
// repository/sftp and repository/s3. repository/repositorytest is the
// conformance suite each of them passes.
package repository
