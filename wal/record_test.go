package wal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testPage = 1024
	testSeg  = 8 * testPage
)

// newTestReader returns a Reader that accepts the small segments the
// builder makes, and collects the records it reports.
func newTestReader(t testing.TB, cfg ReaderConfig) (*Reader, *[]Record) {
	t.Helper()
	var got []Record
	if cfg.OnRecord == nil {
		cfg.OnRecord = func(rec *Record) error {
			c := *rec
			c.MainData = append([]byte{}, rec.MainData...)
			got = append(got, c)
			return nil
		}
	}
	r, err := NewReader(cfg)
	require.NoError(t, err)
	r.minSegSize = minPageSize
	return r, &got
}

// feed feeds segs to r in writes of chunk bytes (all at once if 0) and
// returns the per-segment summaries.
func feed(t testing.TB, r *Reader, segs []segment, chunk int) []Summary {
	t.Helper()
	var sums []Summary
	for _, s := range segs {
		require.NoError(t, r.BeginSegment(s.name))
		for b := s.data; len(b) > 0; {
			n := len(b)
			if chunk > 0 {
				n = min(n, chunk)
			}
			k, err := r.Write(b[:n])
			require.NoError(t, err)
			require.Equal(t, n, k)
			b = b[n:]
		}
		sum, err := r.EndSegment()
		require.NoError(t, err)
		sums = append(sums, sum)
	}
	return sums
}

// t0 is a TimestampTz: 2026-11-25 08:00:00 UTC.
var t0 = time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC).Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()

// buildMixed builds WAL with every feature the Reader handles: records
// spanning pages and a segment boundary, headers split across pages,
// block references with and without images, holes and compression,
// origins, top-level xids, long main data, commits, aborts, restore
// points and a switch.
func buildMixed(t testing.TB, version int) *walBuilder {
	w := newBuilder(t, version, testSeg, testPage, "000000010000000000000010")
	w.add(buildRec{rmid: RmgrXLOG, info: 0x10, main: fill(88, 1)}) // a checkpoint
	w.add(heapRec(700, 40, buildBlock{id: 0, data: fill(60, 2)}))
	w.add(heapRec(700, 3, buildBlock{id: 0, image: fill(300, 3), holeOff: 100},
		buildBlock{id: 1, data: fill(5, 4), sameRel: true},
		buildBlock{id: 4, image: fill(200, 5), holeOff: 64, holeLen: 4000, compressed: true, data: fill(9, 6)}))
	w.add(buildRec{rmid: 10, xid: 701, origin: true, topXID: 700, blocks: []buildBlock{{id: 0, data: fill(3, 7)}}})
	w.add(buildRec{rmid: RmgrXLOG, info: 0xB0, blocks: []buildBlock{{id: 0, image: fill(testPage, 8)}}}) // FPI, no main data
	w.add(commitRec(700, t0+1_500_000))
	w.add(heapRec(702, 2500)) // spans pages
	w.add(abortRec(702, t0+2_000_000))
	w.add(restorePointRec("before batch", t0+2_500_000))
	// Fill the page but 8 bytes: the next header is split across pages.
	room := func() int { w.align(); return testPage - int(w.pos())%testPage }
	for room() != 8 {
		w.add(heapRec(703, max(0, min(200, room()-24-2-8))))
	}
	w.add(commitRec(703, t0+3_000_000))
	w.add(buildRec{rmid: 21, xid: 704, main: fill(20000, 9)}) // a logical message across a segment boundary
	w.add(commitRec(704, t0+2_900_000))                       // earlier than the one before: times are not in LSN order
	w.add(restorePointRec("after batch", t0+4_000_000))
	w.add(switchRec())
	w.add(heapRec(705, 10))
	w.add(commitRec(705, t0+5_000_000))
	return w
}

func TestReaderReadsEveryRecord(t *testing.T) {
	for _, version := range []int{13, 14, 15, 16, 17} {
		for _, chunk := range []int{0, 1, 7, 1000, 4096} {
			t.Run(fmt.Sprintf("pg%d/chunk%d", version, chunk), func(t *testing.T) {
				w := buildMixed(t, version)
				r, got := newTestReader(t, ReaderConfig{MainDataLimit: 10000})
				sums := feed(t, r, w.segments(), chunk)
				want := truncateMain(w.want, 10000)
				require.Equal(t, len(want), len(*got))
				for i := range want {
					require.Equal(t, want[i], (*got)[i], "record %d", i)
				}
				total := r.Summary()
				assert.Equal(t, Summary{
					Timeline: 1, First: want[0].LSN, Last: want[len(want)-1].LSN, End: want[len(want)-1].End,
					Records: int64(len(want)), Commits: 4, Aborts: 1,
					FirstCommit: pgTime(t0 + 1_500_000), LastCommit: pgTime(t0 + 5_000_000), MaxXID: 705,
					RestorePoints: []RestorePoint{
						{Name: "before batch", LSN: want[8].LSN, End: want[8].End, Time: pgTime(t0 + 2_500_000)},
						{Name: "after batch", LSN: want[len(want)-4].LSN, End: want[len(want)-4].End, Time: pgTime(t0 + 4_000_000)},
					},
					Stop: &Stop{LSN: want[len(want)-1].End, Reason: fmt.Sprintf("invalid record length at %s: expected at least 24, got 0", want[len(want)-1].End)},
				}, total)
				merged := Summary{}
				for _, s := range sums {
					merged = merged.Merge(s)
				}
				assert.Equal(t, total, merged, "the segments' summaries merge into the whole")
			})
		}
	}
}

func truncateMain(recs []Record, limit int) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		r.MainData = r.MainData[:min(len(r.MainData), limit)]
		out[i] = r
	}
	return out
}

func pgTime(us int64) time.Time {
	t, ok := timestampTz(binary.LittleEndian.AppendUint64(nil, uint64(us)))
	if !ok {
		panic(us)
	}
	return t
}

func TestReaderBuilderCoversTheCases(t *testing.T) {
	w := buildMixed(t, 15)
	var spansSegment, splitHeader bool
	for _, rec := range w.want {
		if rec.LSN/testSeg != (rec.End-1)/testSeg {
			spansSegment = true
		}
		if rec.LSN%testPage > testPage-recordHeaderSize {
			splitHeader = true
		}
	}
	assert.True(t, spansSegment, "a record spans segments")
	assert.True(t, splitHeader, "a record header spans pages")
}

// bigRecord is buildMixed's record that spans segments.
func bigRecord(w *walBuilder) Record {
	for _, rec := range w.want {
		if rec.MainDataLen == 20000 {
			return rec
		}
	}
	panic("no big record")
}

func TestReaderStartsMidStream(t *testing.T) {
	w := buildMixed(t, 15)
	segs := w.segments()
	big := bigRecord(w)
	first, last := int((big.LSN-w.start())/testSeg), int((big.End-1-w.start())/testSeg)
	require.Greater(t, last-first, 1, "the big record spans a whole segment")
	// Start in a segment that holds only the big record's continuation,
	// and in the one where it ends.
	for from := first + 1; from <= last; from++ {
		r, got := newTestReader(t, ReaderConfig{})
		sums := feed(t, r, segs[from:], 0)
		var want []Record
		for _, rec := range w.want {
			if rec.LSN > big.LSN {
				want = append(want, rec)
			}
		}
		require.Equal(t, want, *got, "from segment %d: the records after the one in progress", from)
		if from < last {
			assert.Zero(t, sums[0].Records, "the segment holds only the continuation")
		}
		assert.Nil(t, sums[0].Stop)
	}
}

func TestReaderStopsAtTruncatedTail(t *testing.T) {
	w := buildMixed(t, 15)
	segs := w.segments()
	big := bigRecord(w)
	// Cut the segment after the one where the big record begins in its
	// middle.
	next := int((big.LSN-w.start())/testSeg) + 1
	cut := append([]segment{}, segs[:next+1]...)
	cut[next].data = cut[next].data[:testSeg/2]
	r, got := newTestReader(t, ReaderConfig{})
	sums := feed(t, r, cut, 0)
	for _, rec := range *got {
		require.Less(t, rec.LSN, big.LSN)
	}
	require.Equal(t, w.want[len(*got)].LSN, big.LSN, "every record before the cut one")
	require.NotNil(t, sums[next].Stop)
	assert.Equal(t, big.LSN, sums[next].Stop.LSN)
	assert.Contains(t, sums[next].Stop.Reason, "ends after 4096 bytes")

	// The rest of the WAL, after a gap, is read again from the next
	// segment that begins a record.
	last := segs[len(segs)-1]
	sum, err := r.Feed(last.name, bytes.NewReader(last.data))
	require.NoError(t, err)
	assert.Positive(t, sum.Records)
}

func TestReaderStopsAtZeroedTail(t *testing.T) {
	w := newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
	for i := range 30 {
		w.add(heapRec(800+uint32(i), 100))
	}
	last := w.want[len(w.want)-1]
	r, got := newTestReader(t, ReaderConfig{})
	sums := feed(t, r, w.segments(), 0)
	require.Len(t, *got, 30)
	assert.Equal(t, &Stop{LSN: last.End, Reason: fmt.Sprintf("invalid record length at %s: expected at least 24, got 0", last.End)}, sums[len(sums)-1].Stop)
	assert.Equal(t, last.End, r.Summary().End)

	// A page of zeros where a header belongs.
	w = newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
	for w.pos()%testPage < testPage-130 {
		w.add(heapRec(900, 100))
	}
	w.align()
	w.add(heapRec(901, int(testPage-w.pos()%testPage)-24-2)) // ends at the page's end
	require.Zero(t, w.pos()%testPage)
	r, _ = newTestReader(t, ReaderConfig{})
	sums = feed(t, r, w.segments(), 0)
	require.NotNil(t, sums[0].Stop)
	assert.Equal(t, w.pos(), sums[0].Stop.LSN)
	assert.Contains(t, sums[0].Stop.Reason, "invalid magic number 0000")
}

func TestReaderStopsAtCorruptRecord(t *testing.T) {
	w := buildMixed(t, 15)
	segs := w.segments()
	victim := w.want[6] // the 2500-byte record across pages
	off := int(victim.LSN-w.start()) + 1500
	segs[off/testSeg].data[off%testSeg] ^= 0x40
	r, got := newTestReader(t, ReaderConfig{})
	sums := feed(t, r, segs, 0)
	require.Equal(t, w.want[:6], truncateMain(*got, DefaultMainDataLimit)[:6], "the records before it")
	stop := r.Summary().Stop
	require.NotNil(t, stop)
	assert.Equal(t, &Stop{LSN: victim.LSN, Reason: fmt.Sprintf("incorrect resource manager data checksum in record at %s", victim.LSN)}, stop)
	assert.Equal(t, stop, sums[0].Stop)
	// The Reader takes up again in the next segment, after the record in
	// progress there.
	require.Greater(t, len(*got), 6)
	assert.Greater(t, (*got)[6].LSN, LSN(testSeg)+w.start())
}

func TestReaderChecksRecordHeaders(t *testing.T) {
	for name, tc := range map[string]struct {
		patch  func(w *walBuilder, b []byte)
		reason string
	}{
		"prev-link": {func(w *walBuilder, b []byte) { binary.LittleEndian.PutUint64(b[8:], 0x28) }, "record with incorrect prev-link 0/28"},
		"rmid":      {func(w *walBuilder, b []byte) { b[17] = 77 }, "invalid resource manager ID 77"},
		"length":    {func(w *walBuilder, b []byte) { binary.LittleEndian.PutUint32(b[0:], 23) }, "invalid record length"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
			w.add(heapRec(1, 10))
			victim := w.add(heapRec(2, 10))
			w.add(heapRec(3, 10))
			segs := w.segments()
			tc.patch(w, segs[0].data[victim.LSN-w.start():])
			r, got := newTestReader(t, ReaderConfig{})
			sums := feed(t, r, segs, 0)
			require.Len(t, *got, 1)
			require.NotNil(t, sums[0].Stop)
			assert.Equal(t, victim.LSN, sums[0].Stop.LSN)
			assert.Contains(t, sums[0].Stop.Reason, tc.reason)
		})
	}
}

// A record whose CRC holds but whose block headers do not add up stops
// the Reader as it stops PostgreSQL.
func TestReaderChecksBlockHeaders(t *testing.T) {
	for name, tc := range map[string]struct {
		blocks []buildBlock
		reason string
	}{
		"order":    {[]buildBlock{{id: 3, data: fill(4, 1)}, {id: 2, data: fill(4, 1), sameRel: true}}, "out-of-order block_id 2"},
		"same rel": {[]buildBlock{{id: 0, data: fill(4, 1), sameRel: true}}, "BKPBLOCK_SAME_REL set but no previous rel"},
		"id":       {[]buildBlock{{id: 40, data: fill(4, 1)}}, "invalid block_id 40"},
		"hole":     {[]buildBlock{{id: 0, image: fill(100, 1), holeOff: 50, compressed: true}}, "BKPIMAGE_HAS_HOLE set, but hole length 0"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
			w.add(heapRec(1, 10))
			victim := w.add(heapRec(2, 10, tc.blocks...))
			r, got := newTestReader(t, ReaderConfig{})
			sums := feed(t, r, w.segments(), 0)
			require.Len(t, *got, 1)
			require.NotNil(t, sums[0].Stop)
			assert.Equal(t, victim.LSN, sums[0].Stop.LSN)
			assert.Contains(t, sums[0].Stop.Reason, tc.reason)
		})
	}
	// A record whose lengths disagree with its headers.
	w := newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
	w.add(heapRec(1, 10))
	rec := w.encode(heapRec(2, 10))
	rec[recordHeaderSize+1]++ // main data length
	binary.LittleEndian.PutUint32(rec[recordCRCOffset:], crc32Of(rec))
	w.align()
	lsn := w.write(rec, len(rec))
	r, _ := newTestReader(t, ReaderConfig{})
	sums := feed(t, r, w.segments(), 0)
	assert.Equal(t, &Stop{LSN: lsn, Reason: fmt.Sprintf("record with invalid length at %s", lsn)}, sums[0].Stop)
}

func crc32Of(rec []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, rec[recordHeaderSize:]), castagnoli, rec[:recordCRCOffset])
}

func TestReaderOverwrittenContrecord(t *testing.T) {
	w := newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
	for w.pos()%testPage < testPage/2 {
		w.add(heapRec(1, 100))
	}
	before := w.want[len(w.want)-1]
	w.abort(heapRec(2, 3000))
	aborted := before.End
	over := w.add(buildRec{rmid: RmgrXLOG, info: 0xD0, main: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, uint64(aborted)), uint64(t0))})
	w.add(commitRec(3, t0))
	r, got := newTestReader(t, ReaderConfig{})
	sums := feed(t, r, w.segments(), 0)
	require.Equal(t, w.want, truncateMain(*got, DefaultMainDataLimit))
	assert.Equal(t, before.LSN, over.Prev, "the record after the overwritten one links to the one before it")
	assert.Equal(t, int64(1), sums[0].Commits)

	// Without the flag, the missing continuation stops the Reader.
	segs := w.segments()
	page := int(over.LSN - over.LSN%testPage - w.start())
	segs[0].data[page+2] &^= xlpFirstIsOverwriteRec
	r, _ = newTestReader(t, ReaderConfig{})
	sums = feed(t, r, segs, 0)
	assert.Equal(t, &Stop{LSN: aborted, Reason: fmt.Sprintf("there is no contrecord flag at %s", over.LSN)}, sums[0].Stop)
}

func TestReaderChecksPages(t *testing.T) {
	build := func() (*walBuilder, []segment) {
		w := newBuilder(t, 15, testSeg, testPage, "000000010000000000000001")
		for w.pos() < w.start()+testSeg+3*testPage {
			w.add(heapRec(1, 300))
		}
		return w, w.segments()
	}
	for name, tc := range map[string]struct {
		patch  func(segs []segment)
		at     LSN // offset of the stop from the start
		reason string
	}{
		"pageaddr":     {func(s []segment) { s[0].data[2*testPage+9]++ }, 2 * testPage, "unexpected pageaddr"},
		"magic":        {func(s []segment) { s[0].data[3*testPage] = 0 }, 3 * testPage, "invalid magic number D100"},
		"info":         {func(s []segment) { s[0].data[3*testPage+2] |= 0x10 }, 3 * testPage, "invalid info bits"},
		"long header":  {func(s []segment) { s[0].data[3*testPage+2] |= xlpLongHeader }, 3 * testPage, "invalid info bits"},
		"timeline":     {func(s []segment) { s[0].data[3*testPage+4] = 0 }, 3 * testPage, "out-of-sequence timeline ID 0 (after 1)"},
		"system id":    {func(s []segment) { s[1].data[24]++ }, testSeg, "database system identifier"},
		"segment size": {func(s []segment) { s[1].data[34]++ }, testSeg, "segment size"},
		"page size":    {func(s []segment) { s[1].data[37]++ }, testSeg, "XLOG_BLCKSZ"},
	} {
		t.Run(name, func(t *testing.T) {
			w, segs := build()
			tc.patch(segs)
			r, _ := newTestReader(t, ReaderConfig{})
			feed(t, r, segs, 0)
			stop := r.Summary().Stop
			require.NotNil(t, stop)
			assert.Equal(t, w.start()+tc.at, stop.LSN)
			assert.Contains(t, stop.Reason, tc.reason)
		})
	}
}

func TestReaderSegmentOrder(t *testing.T) {
	w := buildMixed(t, 15)
	segs := w.segments()
	r, _ := newTestReader(t, ReaderConfig{})
	feed(t, r, segs[1:2], 0)
	require.ErrorContains(t, r.BeginSegment(segs[0].name), "not after")
	require.ErrorContains(t, r.BeginSegment(segs[1].name), "not after")
	require.ErrorContains(t, r.BeginSegment("00000001.history"), "not a segment")
	require.ErrorIs(t, r.BeginSegment("0000000100000000000000XY"), ErrInvalidFileName)
	_, err := r.Write([]byte{1})
	require.ErrorContains(t, err, "no segment begun")
	_, err = r.EndSegment()
	require.Error(t, err)
	require.NoError(t, r.BeginSegment(segs[2].name))
	require.ErrorContains(t, r.BeginSegment(segs[3].name), "not ended")

	// Bytes past the segment size are not WAL.
	r, _ = newTestReader(t, ReaderConfig{})
	sum, err := r.Feed(segs[0].name, bytes.NewReader(append(segs[0].data, 1, 2, 3)))
	require.NoError(t, err)
	require.NotNil(t, sum.Stop)
	assert.Contains(t, sum.Stop.Reason, "longer than 8192 bytes")
}

func TestReaderConfig(t *testing.T) {
	_, err := NewReader(ReaderConfig{SegmentSize: 3 << 20})
	require.Error(t, err)
	_, err = NewReader(ReaderConfig{MainDataLimit: 10})
	require.Error(t, err)
	r, err := NewReader(ReaderConfig{SegmentSize: 16 << 20})
	require.NoError(t, err)
	w := buildMixed(t, 15)
	sum, err := r.Feed(w.segments()[0].name, bytes.NewReader(w.segments()[0].data))
	require.NoError(t, err)
	require.NotNil(t, sum.Stop)
	assert.Contains(t, sum.Stop.Reason, "segment size 8192 in page header, want 16777216")
}

func TestReaderCallbackError(t *testing.T) {
	boom := fmt.Errorf("boom")
	n := 0
	r, _ := newTestReader(t, ReaderConfig{OnRecord: func(*Record) error {
		if n++; n == 3 {
			return boom
		}
		return nil
	}})
	segs := buildMixed(t, 15).segments()
	_, err := r.Feed(segs[0].name, bytes.NewReader(segs[0].data))
	require.ErrorIs(t, err, boom)
	require.ErrorIs(t, r.BeginSegment(segs[1].name), boom)
	assert.Equal(t, 3, n)
}

// Feed reads through its buffer, whatever src prefers.
func TestReaderFeedMatchesWrite(t *testing.T) {
	segs := buildMixed(t, 16).segments()
	r1, got1 := newTestReader(t, ReaderConfig{})
	r2, got2 := newTestReader(t, ReaderConfig{})
	feed(t, r1, segs, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range segs {
		_, err := r2.Feed(s.name, &jitterReader{b: s.data, rng: rng})
		require.NoError(t, err)
	}
	assert.Equal(t, *got1, *got2)
	assert.Equal(t, r1.Summary(), r2.Summary())
}

type jitterReader struct {
	b   []byte
	rng *rand.Rand
}

func (j *jitterReader) Read(p []byte) (int, error) {
	if len(j.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+j.rng.IntN(3000))], j.b)
	j.b = j.b[n:]
	return n, nil
}

func TestSummaryJSON(t *testing.T) {
	s := Summary{
		Timeline: 2, First: 0x3000028, Last: 0x3FFE860, End: 0x3FFE8A0, Records: 5229, Commits: 12, Aborts: 1,
		FirstCommit: pgTime(t0 + 123456), LastCommit: pgTime(t0 + 60_000_000), MaxXID: 729,
		RestorePoints: []RestorePoint{{Name: "nightly", LSN: 0x3000100, End: 0x3000168, Time: pgTime(t0 + 1)}},
		Stop:          &Stop{LSN: 0x3FFE8A0, Reason: "invalid record length at 0/3FFE8A0: expected at least 24, got 0"},
	}
	b, err := json.Marshal(s)
	require.NoError(t, err)
	assert.JSONEq(t, `{"tli":2,"first":"0/3000028","last":"0/3FFE860","end":"0/3FFE8A0","records":5229,"commits":12,"aborts":1,
		"first_commit":"2026-11-25T08:00:00.123456Z","last_commit":"2026-11-25T08:01:00Z","max_xid":729,
		"restore_points":[{"name":"nightly","lsn":"0/3000100","end":"0/3000168","time":"2026-11-25T08:00:00.000001Z"}],
		"stop":{"lsn":"0/3FFE8A0","reason":"invalid record length at 0/3FFE8A0: expected at least 24, got 0"}}`, string(b))
	var back Summary
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, s, back)

	b, err = json.Marshal(Summary{})
	require.NoError(t, err)
	assert.Equal(t, `{}`, string(b), "an empty summary is empty")
}

func TestSummaryMerge(t *testing.T) {
	a := Summary{Timeline: 1, First: 100, Last: 200, End: 240, Records: 3, Commits: 1, FirstCommit: pgTime(5), LastCommit: pgTime(5),
		MaxXID: 0xFFFFFFF0, RestorePoints: []RestorePoint{{Name: "a"}}}
	b := Summary{Timeline: 2, First: 240, Last: 400, End: 440, Records: 2, Aborts: 1, Commits: 2, FirstCommit: pgTime(3), LastCommit: pgTime(9),
		MaxXID: 5, RestorePoints: []RestorePoint{{Name: "b"}}, Stop: &Stop{LSN: 440, Reason: "x"}}
	m := a.Merge(b)
	assert.Equal(t, Summary{Timeline: 2, First: 100, Last: 400, End: 440, Records: 5, Commits: 3, Aborts: 1,
		FirstCommit: pgTime(3), LastCommit: pgTime(9), MaxXID: 5, RestorePoints: []RestorePoint{{Name: "a"}, {Name: "b"}},
		Stop: &Stop{LSN: 440, Reason: "x"}}, m, "xids wrap around")
	m.RestorePoints[0].Name = "changed"
	m.Stop.Reason = "changed"
	assert.Equal(t, "a", a.RestorePoints[0].Name, "Merge copies")
	assert.Equal(t, "x", b.Stop.Reason, "Merge copies")
	assert.Equal(t, a, a.Merge(Summary{}).Merge(Summary{}))
	assert.Equal(t, b, Summary{}.Merge(b))
}

func TestTimestampTz(t *testing.T) {
	at := func(us int64) (time.Time, bool) {
		return timestampTz(binary.LittleEndian.AppendUint64(nil, uint64(us)))
	}
	got, ok := at(0)
	require.True(t, ok)
	assert.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), got)
	got, ok = at(-1)
	require.True(t, ok)
	assert.Equal(t, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), got)
	for _, us := range []int64{math64Min, math64Max, 10_000 * 366 * 86400 * 1_000_000} {
		_, ok := at(us)
		assert.False(t, ok, "%d", us)
	}
	_, ok = timestampTz([]byte{1, 2, 3})
	assert.False(t, ok)
}

const (
	math64Min = -1 << 63
	math64Max = 1<<63 - 1
)
