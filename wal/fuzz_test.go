package wal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzSeeds are small runs of segments (1 KiB pages, 2 KiB segments) with
// the features the Reader handles; testdata/fuzz/FuzzReader holds them too.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, version := range []int{13, 15} {
		w := newBuilder(t, version, 2*testPage, testPage, "000000010000000000000010")
		w.add(heapRec(700, 3, buildBlock{id: 0, image: fill(300, 3), holeOff: 100},
			buildBlock{id: 1, data: fill(5, 4), sameRel: true},
			buildBlock{id: 4, image: fill(200, 5), holeOff: 64, holeLen: 4000, compressed: true, data: fill(9, 6)}))
		w.add(buildRec{rmid: 10, xid: 701, origin: true, topXID: 700, blocks: []buildBlock{{id: 0, data: fill(3, 7)}}})
		w.add(commitRec(700, t0))
		w.add(restorePointRec("rp", t0))
		w.add(buildRec{rmid: 21, xid: 704, main: fill(2500, 9)})
		w.add(abortRec(704, t0))
		w.add(switchRec())
		w.add(commitRec(705, t0))
		seeds = append(seeds, bytes.Join(segmentData(w.segments()), nil))
	}
	w := newBuilder(t, 15, 2*testPage, testPage, "000000010000000000000010")
	w.add(heapRec(1, 700))
	w.abort(heapRec(2, 1500))
	w.add(buildRec{rmid: RmgrXLOG, info: 0xD0, main: make([]byte, 16)})
	w.add(commitRec(3, t0))
	return append(seeds, bytes.Join(segmentData(w.segments()), nil))
}

func segmentData(segs []segment) [][]byte {
	var out [][]byte
	for _, s := range segs {
		out = append(out, s.data)
	}
	return out
}

// FuzzReader feeds arbitrary bytes as consecutive segments (cut at the
// segment size the first page header claims, when it is small) and checks
// that the Reader never panics, keeps its buffers bounded, reports records
// in order, and summarises them into JSON that reads back the same.
func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = minMainDataLimit
		var last LSN
		r, err := NewReader(ReaderConfig{MainDataLimit: limit, OnRecord: func(rec *Record) error {
			if rec.LSN <= last && last != 0 || rec.End <= rec.LSN {
				t.Fatalf("record at %s ending %s after %s", rec.LSN, rec.End, last)
			}
			last = rec.LSN
			if len(rec.MainData) > limit || uint32(len(rec.MainData)) > rec.MainDataLen {
				t.Fatalf("main data %d of %d", len(rec.MainData), rec.MainDataLen)
			}
			return nil
		}})
		require.NoError(t, err)
		r.minSegSize = minPageSize
		// Cut the input at the segment size its first page claims, and name
		// the segments after its page address, so that the input reaches
		// past the first header checks.
		segSize, nameSize := len(data), int64(len(data))
		if len(data) >= LongHeaderSize {
			if s := int64(binary.LittleEndian.Uint32(data[32:])); validSize(s, minPageSize, maxSegmentSize) {
				segSize, nameSize = min(int(s), len(data)), s
			}
		}
		if segSize == 0 {
			return
		}
		name := FileName{Kind: Segment, Timeline: 1}
		if len(data) >= 16 {
			name = SegmentAt(max(1, binary.LittleEndian.Uint32(data[4:])), LSN(binary.LittleEndian.Uint64(data[8:])), nameSize)
		}
		for off := 0; off < len(data); off += segSize {
			_, err := r.Feed(name.String(), bytes.NewReader(data[off:min(off+segSize, len(data))]))
			require.NoError(t, err)
			next := name.Next(nameSize)
			if next.Log < name.Log {
				break // the end of the LSN space
			}
			name = next
		}
		require.LessOrEqual(t, cap(r.rec.blk), 2*maxBlockHeaders)
		require.LessOrEqual(t, cap(r.rec.main), 2*limit)
		sum := r.Summary()
		b, err := json.Marshal(sum)
		require.NoError(t, err)
		var back Summary
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, sum, back)
	})
}

// The seeds are WAL the Reader reads to the end.
func TestFuzzSeeds(t *testing.T) {
	for i, s := range fuzzSeeds(t) {
		r, got := newTestReader(t, ReaderConfig{})
		var segs []segment
		name := FileName{Kind: Segment, Timeline: 1, Seg: 0x10}
		for off := 0; off < len(s); off += 2 * testPage {
			segs = append(segs, segment{name: name.String(), data: s[off : off+2*testPage]})
			name = name.Next(2 * testPage)
		}
		feed(t, r, segs, 0)
		require.NotEmpty(t, *got, "seed %d", i)
		stop := r.Summary().Stop
		require.NotNil(t, stop, "seed %d", i)
		require.Contains(t, stop.Reason, "got 0", "seed %d ends in zeros, not in an error", i)
	}
}
