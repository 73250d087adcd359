package walbackup

import (
	"context"
	"io"
	"strconv"

	"github.com/pglogship/pglogship/session"
)

// SetSummaryFilter makes the job's WAL summarizer read each segment
// through filter (fault injection: WAL the reader cannot read); the
// shipped bytes are not changed.
func SetSummaryFilter(c *Config, filter func(segment string, w io.Writer) io.Writer) {
	c.summaryFilter = filter
}

// LaunchUnderLease starts j's loop as a Runner does under lease l, but
// without its clock check of the lease: a process that has not noticed
// yet that it lost the lease. done is closed when the loop ends.
func LaunchUnderLease(ctx context.Context, j *Job, l session.Lease) (done <-chan struct{}, err error) {
	done, _, err = j.launch(ctx, runOptions{note: "run under lease token " + strconv.FormatInt(l.Token, 10), lease: &l})
	return done, err
}
