# The commands a newcomer needs: `make demo` and `make test`. Both install
# what they need first (scripts/setup).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

CACHE ?= $(HOME)/.cache/pglogship
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(CACHE)/bin/staticcheck-$(STATICCHECK_VERSION)
export PGLOGSHIP_CACHE := $(CACHE)
export STATICCHECK_VERSION

.PHONY: all setup test check fmt vet staticcheck unit demo fuzz bench crash soak scale

all: test

setup:
	@scripts/setup

## test: everything CI runs: setup, formatting, vet, staticcheck, all tests
## with -race; the QEMU VM tests (build tag !race) run in the second go test,
## without the race detector, under which compressing a VM's disk takes minutes.
test: setup check
	go test -race -count=1 -timeout 45m ./...
	go test -count=1 -timeout 30m -run '^TestQEMU' ./walbackup/ ./examples/qemu-vm/

check: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

staticcheck: setup
	$(STATICCHECK) ./...

## unit: the quick local loop; skips the tests that start real servers.
unit:
	go test -short -count=1 ./...

## demo: runs the main job end to end on the embedded default, then
## `pglogship info` on the configuration the quickstart wrote; it installs
## only PostgreSQL (scripts/setup --demo), not what the tests need.
demo:
	@scripts/setup --demo
	scripts/demo-postgres scripts/demo

## crash: the crash-injection tests with 1000 kill points instead of make test's 100.
crash:
	PGLOGSHIP_CRASH_TRIALS=1000 go test -count=1 -timeout 30m -run 'KilledAtRandomPoints' ./walbackup/

## soak: crash trials at scale: 1000 kill points over shipping, parents and
## expiry, 500 cuts of a ship, 500 deaths of one of two host processes
## sharing jobs, and the lease and fencing tests 20 times over, all with -race.
soak:
	PGLOGSHIP_CRASH_TRIALS=1000 go test -race -count=1 -timeout 60m -run 'KilledAtRandomPoints|CutOffAtRandomPoints' ./walbackup/
	go test -race -count=20 -timeout 60m -run 'Runner|Paused|Stale' ./walbackup/
	go test -race -count=20 -timeout 60m -run 'Conformance/Leases' ./session/memory/
	go test -race -count=20 -timeout 60m -run 'Conformance/.*/Leases' ./session/postgres/

## scale: the sizing runs of docs/scale.md: Runners in one process on a real
## PostgreSQL store (1000 machines, 1 and 3 processes, mock clock), then
## 10,000 machines over 5 fleethost processes on the real clock through one
## whole 15-minute interval (about 20 minutes).
scale: setup
	go test -run '^$$' -bench 'FleetScale' -benchtime 1x -timeout 60m ./walbackup/
	go test -run '^$$' -bench 'FleetProcesses' -benchtime 1x -timeout 60m ./walbackup/

## fuzz: a short run of every fuzz target.
fuzz:
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
	    go test -run XXX -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; \
	done

## bench: the comparisons with the peer tools in one run (see bench/doc.go):
## archive_command against cp+sync and pgBackRest archive-push; shipping a
## 1 GiB backlog over SSH into fs and SFTP against pgBackRest's async push;
## restore_command fetches against pgBackRest's async archive-get; recovery
## to the end of 1 GiB of WAL against async archive-get and cp; repository
## throughput and peak memory. The summary table and the raw output go to
## bench/results/.
## BENCH_PG=18 runs them on another PostgreSQL release (13 to 18).
BENCH_RECOVER_SEGMENTS ?= 64
bench: setup
	BENCH_RECOVER_SEGMENTS=$(BENCH_RECOVER_SEGMENTS) BENCH_PG=$(BENCH_PG) scripts/bench
