package walbackup

import "io"

// SetSummaryFilter makes the job's WAL summarizer read each segment
// through filter (fault injection: WAL the reader cannot read); the
// shipped bytes are not changed.
func SetSummaryFilter(c *Config, filter func(segment string, w io.Writer) io.Writer) {
	c.summaryFilter = filter
}
