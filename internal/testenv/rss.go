package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RSSSampler follows the summed resident memory of a set of processes,
// for peak-memory figures of tools whose workers detach (so wait4's
// rusage misses them) or whose processes live a few milliseconds.
type RSSSampler struct {
	pids    []int
	markers []string
	stop    chan struct{}
	done    chan struct{}
	peak    int64 // KiB
}

// SampleRSS samples every interval, summing VmRSS over pids and over every
// process whose command line holds one of markers (a path only the tool
// under test is given), until Stop. Processes shorter than interval can be
// missed.
func SampleRSS(interval time.Duration, pids []int, markers ...string) *RSSSampler {
	s := &RSSSampler{pids: pids, markers: markers, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			s.peak = max(s.peak, s.sample())
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the peak in KiB.
func (s *RSSSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

func (s *RSSSampler) sample() int64 {
	seen := map[int]bool{}
	var sum int64
	add := func(pid int) {
		if !seen[pid] {
			seen[pid] = true
			sum += vmRSS(pid)
		}
	}
	for _, pid := range s.pids {
		add(pid)
	}
	for _, m := range s.markers {
		for _, p := range processesWith(m) {
			if pid, err := strconv.Atoi(p); err == nil {
				add(pid)
			}
		}
	}
	return sum
}

// vmRSS is a process's resident memory in KiB, 0 once it is gone.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// TreeCPUTime sums the CPU time used so far by pid and its descendants,
// those that have exited and been waited for included: the difference of
// two calls is what the tree used in between (sshd and the connections it
// forks, each in a session of its own).
func TreeCPUTime(pid int) time.Duration {
	entries, _ := os.ReadDir("/proc")
	type proc struct {
		ppid  int
		ticks int64
	}
	procs := map[int]proc{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(e.Name())
		if len(f) < 15 {
			continue
		}
		p := proc{}
		p.ppid, _ = strconv.Atoi(f[1])
		p.ticks = sumTicks(f[11:15]) // utime, stime, cutime, cstime
		procs[n] = p
	}
	var ticks int64
	for n, p := range procs {
		for a := n; a > 1; a = procs[a].ppid {
			if a == pid {
				ticks += p.ticks
				break
			}
			if _, ok := procs[a]; !ok {
				break
			}
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// statFields returns the fields of /proc/<pid>/stat after the command's
// closing parenthesis (state first, then ppid; utime is the 12th), or nil.
func statFields(pid string) []string {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
}

func sumTicks(fields []string) int64 {
	var ticks int64
	for _, v := range fields {
		t, _ := strconv.ParseInt(v, 10, 64)
		ticks += t
	}
	return ticks
}

// CPUTime sums the user and system CPU time used so far by every process
// whose command line holds marker, and by pids.
func CPUTime(pids []int, marker string) time.Duration {
	var ticks int64
	add := func(pid string) {
		if f := statFields(pid); len(f) > 12 {
			ticks += sumTicks(f[11:13]) // utime, stime
		}
	}
	for _, p := range pids {
		add(strconv.Itoa(p))
	}
	if marker != "" {
		for _, p := range processesWith(marker) {
			add(p)
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
