// Package walbundle builds WAL bundles with their summaries: the one
// pipeline that both shipping paths run, the host's (frames streamed from
// the guest) and the guest's own (direct shipping, files read where they
// lie). Restores rely on the summaries it stores in each segment's entry.
package walbundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// Unknown is a bundled segment whose summary covers only its records
// before From, because the reader could not read on from there.
type Unknown = guest.UnknownSummary

// File is what the builder learned of one file it bundled.
type File = guest.BundleFile

// Builder writes WAL files into one bundle, summarizing each segment as
// it passes. Not safe for concurrent use.
type Builder struct {
	w       *bundle.Writer
	sums    *summarizer
	files   []File
	unknown []Unknown
	raw     int64
}

// Filter sees what the summarizer reads of each segment (tests use it to
// make a segment unreadable); nil leaves it alone.
type Filter func(segment string, w io.Writer) io.Writer

// Checksum is the algorithm of WAL files' checksums in the bundles New
// writes: what the guest computes of each file it sends or bundles.
const Checksum = checksum.XXH3

// New starts a bundle for the object name on w, sealed with key when set,
// recording created as its creation time.
func New(w io.Writer, object string, key *bundle.Key, created time.Time, filter Filter) (*Builder, error) {
	bw, err := bundle.NewWriterWith(w, object, key, Checksum)
	if err != nil {
		return nil, err
	}
	bw.SetCreated(created)
	b := &Builder{w: bw, sums: newSummarizer(filter)}
	bw.SetTap(b.sums.tap)
	return b, nil
}

// Add bundles the file name from r, encoded as codec. claim, when set,
// is the sender's raw size and checksum (valid once r is drained), which
// must match what was bundled.
func (b *Builder) Add(name string, codec bundle.Codec, r io.Reader, claim func() (int64, checksum.Sum)) (File, error) {
	var e bundle.Entry
	var err error
	if codec != bundle.Raw && claim != nil {
		e, err = b.w.AddCompressed(name, codec, r, claim)
	} else {
		e, err = b.w.Add(name, codec, r)
	}
	if err != nil {
		return File{}, err
	}
	if claim != nil {
		if size, sum := claim(); size != e.RawSize || sum != e.Sum {
			return File{}, fmt.Errorf("%w: %s", ErrChecksum, name)
		}
	}
	return b.added(e)
}

// added records a file the writer took: its summary (or why there is
// none) into the bundle, its sums into the result.
func (b *Builder) added(e bundle.Entry) (File, error) {
	meta, u := b.sums.end(e.Name)
	if meta != nil {
		if err := b.w.SetMeta(e.Name, meta); err != nil {
			return File{}, err
		}
	}
	if u != nil {
		b.unknown = append(b.unknown, *u)
	}
	f := File{Name: e.Name, RawSize: e.RawSize, Sum: e.Sum}
	b.files = append(b.files, f)
	b.raw += e.RawSize
	return f, nil
}

// ErrChecksum means a file's content changed between the guest and the
// repository: what the guest summed and what was bundled or stored
// disagree.
var ErrChecksum = errors.New("wal file checksum mismatch between guest and repository")

// Close ends the bundle (its index and trailer) and returns what it holds.
func (b *Builder) Close() (Result, error) {
	if _, err := b.w.Close(); err != nil {
		return Result{}, err
	}
	return Result{Files: b.files, Unknown: b.unknown, RawBytes: b.raw}, nil
}

// Result is what a closed Builder bundled.
type Result struct {
	Files    []File    `json:"files"`
	Unknown  []Unknown `json:"unknown,omitempty"`
	RawBytes int64     `json:"raw_bytes"`
}

// Sums maps each bundled file to its checksum, as bundle.VerifyStored
// wants them.
func (r Result) Sums() map[string]checksum.Sum {
	m := make(map[string]checksum.Sum, len(r.Files))
	for _, f := range r.Files {
		m[f.Name] = f.Sum
	}
	return m
}

// summarizer reads each segment's records as it is bundled, for the
// summary restores use (commit times, xids, named restore points). It is
// best effort: bundling goes on whatever it cannot read, and it says what
// that was. A segment it cannot read on to its end keeps a summary with
// Stop set (or none, once the reader failed), so it is never taken for a
// segment without commits.
type summarizer struct {
	r      *wal.Reader
	cur    string
	failed string // why the reader can read no more of this bundle
	filter Filter
}

func newSummarizer(filter Filter) *summarizer {
	s := &summarizer{filter: filter}
	r, err := wal.NewReader(wal.ReaderConfig{})
	if err != nil {
		s.failed = err.Error()
	}
	s.r = r
	return s
}

func (s *summarizer) tap(name string) io.Writer {
	f, err := wal.ParseFileName(name)
	if err != nil || f.Kind != wal.Segment {
		return nil
	}
	s.cur = name
	if s.failed != "" {
		return nil
	}
	if err := s.r.BeginSegment(name); err != nil {
		s.failed = err.Error()
		return nil
	}
	var w io.Writer = lenient{s}
	if s.filter != nil {
		w = s.filter(name, w)
	}
	return w
}

// end returns the JSON summary of the segment name (nil when there is
// none) and, when it does not cover the whole segment, what is unknown.
func (s *summarizer) end(name string) ([]byte, *Unknown) {
	if s.cur != name {
		return nil, nil // not a segment
	}
	s.cur = ""
	if s.failed != "" {
		return nil, &Unknown{Segment: name, Reason: s.failed}
	}
	sum, err := s.r.EndSegment()
	if err != nil {
		s.failed = err.Error()
		return nil, &Unknown{Segment: name, Reason: s.failed}
	}
	b, err := json.Marshal(sum)
	if err != nil {
		return nil, &Unknown{Segment: name, Reason: err.Error()}
	}
	if sum.Stop != nil {
		return b, &Unknown{Segment: name, From: sum.Stop.LSN, Reason: sum.Stop.Reason}
	}
	return b, nil
}

// lenient feeds the reader but never fails the bundle's write.
type lenient struct{ s *summarizer }

func (l lenient) Write(p []byte) (int, error) {
	if l.s.failed == "" {
		if _, err := l.s.r.Write(p); err != nil {
			l.s.failed = err.Error()
		}
	}
	return len(p), nil
}

// FrameCodec is the bundle codec of bytes encoded as c: how Add must take
// a frame the guest sent, or how the guest compresses. A codec not known
// is an error, never taken for raw bytes.
func FrameCodec(c guest.Codec) (bundle.Codec, error) {
	switch c {
	case guest.CodecNone:
		return bundle.Raw, nil
	case guest.CodecZstd:
		return bundle.Zstd, nil
	case guest.CodecS2:
		return bundle.S2, nil
	}
	return 0, fmt.Errorf("the guest sent a frame with unknown codec %q", c)
}
