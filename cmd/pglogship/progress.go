package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/walbackup"
)

// progress shows long work (image export and restore, WAL fetched for a
// recovery) from the jobs' events: bars with bytes, rate and ETA on a
// terminal, else a plain line now and then. It writes to stderr, so
// stdout keeps only the result (and stays parseable with --json).
type progress struct {
	w   io.Writer
	tty bool
	clk clock.Clock

	mu      sync.Mutex
	bars    map[string]*progressbar.ProgressBar
	said    map[string]time.Time // plain mode: when each work last printed
	fetched int
	bytes   int64
}

// newProgress shows progress on stderr; as bars when stdout and stderr
// are terminals.
func newProgress(stdout, stderr io.Writer) *progress {
	return &progress{w: stderr, tty: isTerminal(stdout) && isTerminal(stderr), clk: clock.New(), bars: map[string]*progressbar.ProgressBar{},
		said: map[string]time.Time{}}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// observe is a job observer (walbackup.Config.Observer); cheap, never
// blocks for long.
func (p *progress) observe(_ string, e walbackup.Event) {
	switch e.Kind {
	case walbackup.EventProgress:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.tty {
			p.bar(e.Message, e.Total).Set64(e.Bytes)
			return
		}
		done := e.Total > 0 && e.Bytes >= e.Total
		if !done && p.clk.Since(p.said[e.Message]) < 2*time.Second {
			return
		}
		p.said[e.Message] = p.clk.Now()
		if e.Total > 0 {
			fmt.Fprintf(p.w, "%s: %s of %s (%d%%)\n", e.Message, bytesShown(e.Bytes), bytesShown(e.Total), e.Bytes*100/e.Total)
		} else {
			fmt.Fprintf(p.w, "%s: %s\n", e.Message, bytesShown(e.Bytes))
		}
	case walbackup.EventWALFetched:
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fetched++
		p.bytes += e.Bytes
		if p.tty {
			b := p.bar("fetching WAL", -1)
			b.Describe(fmt.Sprintf("fetching WAL (%d files, %s)", p.fetched, e.Message))
			_ = b.Add64(e.Bytes)
			return
		}
		fmt.Fprintf(p.w, "fetched WAL %s (%s; %d files, %s so far)\n", e.Message, bytesShown(e.Bytes), p.fetched, bytesShown(p.bytes))
	}
}

// bar returns the bar of what, made on first use (total -1: unknown).
func (p *progress) bar(what string, total int64) *progressbar.ProgressBar {
	if b, ok := p.bars[what]; ok {
		return b
	}
	if total == 0 {
		total = -1
	}
	b := progressbar.NewOptions64(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }))
	p.bars[what] = b
	return b
}

// finish ends the bars, so the result starts on a line of its own.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.bars {
		_ = b.Finish()
	}
	p.bars = map[string]*progressbar.ProgressBar{}
}
