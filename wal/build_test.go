package wal

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/stretchr/testify/require"
)

// walBuilder lays records out in WAL pages and segments as PostgreSQL
// does (page headers, continuation flags, alignment, xl_prev, CRC), so
// tests can build WAL with exactly the features they need, in pages and
// segments small enough to fuzz.
type walBuilder struct {
	t         testing.TB
	version   int
	segSize   int
	pageSize  int
	tli       uint32
	sysID     uint64
	first     FileName
	buf       []byte
	prev      LSN
	overwrite bool // the next page header says XLP_FIRST_IS_OVERWRITE_CONTRECORD
	want      []Record
}

type buildRec struct {
	rmid, info uint8
	xid        uint32
	blocks     []buildBlock
	origin     bool
	topXID     uint32
	main       []byte
}

type buildBlock struct {
	id         uint8
	data       []byte
	image      []byte
	holeOff    uint16 // with an image: BKPIMAGE_HAS_HOLE
	holeLen    uint16 // with a compressed image with a hole
	compressed bool
	sameRel    bool
}

func newBuilder(t testing.TB, version, segSize, pageSize int, first string) *walBuilder {
	t.Helper()
	f, err := ParseFileName(first)
	require.NoError(t, err)
	return &walBuilder{t: t, version: version, segSize: segSize, pageSize: pageSize, tli: f.Timeline,
		sysID: 7311571392434063147, first: f}
}

func (w *walBuilder) start() LSN { return w.first.StartLSN(int64(w.segSize)) }
func (w *walBuilder) pos() LSN   { return w.start() + LSN(len(w.buf)) }

// encode returns the whole record, header and CRC included.
func (w *walBuilder) encode(rec buildRec) []byte {
	var hdrs, data []byte
	for _, b := range rec.blocks {
		flags := uint8(0)
		if len(b.data) > 0 {
			flags |= bkpBlockHasData
		}
		if b.image != nil {
			flags |= bkpBlockHasImage
		}
		if b.sameRel {
			flags |= bkpBlockSameRel
		}
		hdrs = append(hdrs, b.id, flags)
		hdrs = binary.LittleEndian.AppendUint16(hdrs, uint16(len(b.data)))
		if b.image != nil {
			info := uint8(0)
			if b.holeOff != 0 {
				info |= bkpImageHasHole
			}
			if b.compressed {
				info |= map[bool]uint8{false: 0x02, true: 0x04}[w.version >= 15]
			}
			info |= map[bool]uint8{false: 0x04, true: 0x02}[w.version >= 15] // BKPIMAGE_APPLY
			hdrs = binary.LittleEndian.AppendUint16(hdrs, uint16(len(b.image)))
			hdrs = binary.LittleEndian.AppendUint16(hdrs, b.holeOff)
			hdrs = append(hdrs, info)
			if b.compressed && b.holeOff != 0 {
				hdrs = binary.LittleEndian.AppendUint16(hdrs, b.holeLen)
			}
			data = append(data, b.image...)
		}
		if !b.sameRel {
			hdrs = append(hdrs, 0x7f, 6, 0, 0, 5, 0, 0, 0, 0x0c, 0x40, 0, 0) // 1663/5/16396
		}
		hdrs = binary.LittleEndian.AppendUint32(hdrs, uint32(b.id)*10)
		data = append(data, b.data...)
	}
	if rec.origin {
		hdrs = append(hdrs, blockIDOrigin, 1, 0)
	}
	if rec.topXID != 0 {
		hdrs = binary.LittleEndian.AppendUint32(append(hdrs, blockIDTopXID), rec.topXID)
	}
	switch n := len(rec.main); {
	case n == 0:
	case n < 256:
		hdrs = append(hdrs, blockIDDataShort, uint8(n))
	default:
		hdrs = binary.LittleEndian.AppendUint32(append(hdrs, blockIDDataLong), uint32(n))
	}
	body := append(append(hdrs, data...), rec.main...)
	h := make([]byte, recordHeaderSize, recordHeaderSize+len(body))
	binary.LittleEndian.PutUint32(h[0:], uint32(recordHeaderSize+len(body)))
	binary.LittleEndian.PutUint32(h[4:], rec.xid)
	binary.LittleEndian.PutUint64(h[8:], uint64(w.prev))
	h[16], h[17] = rec.info, rec.rmid
	crc := crc32.Update(crc32.Update(0, castagnoli, body), castagnoli, h[:recordCRCOffset])
	binary.LittleEndian.PutUint32(h[recordCRCOffset:], crc)
	return append(h, body...)
}

// add appends rec and returns what the Reader should report for it.
func (w *walBuilder) add(rec buildRec) Record {
	b := w.encode(rec)
	w.align()
	lsn := w.write(b, len(b))
	end := w.pos()
	end += LSN(padding(end))
	want := Record{LSN: lsn, End: end, Prev: w.prev, XID: rec.xid, Rmid: rec.rmid, Info: rec.info,
		TotalLen: uint32(len(b)), MainData: append([]byte{}, rec.main...), MainDataLen: uint32(len(rec.main))}
	w.prev = lsn
	w.want = append(w.want, want)
	if rec.rmid == RmgrXLOG && rec.info == xlogSwitch {
		for len(w.buf)%w.segSize != 0 {
			w.buf = append(w.buf, 0)
		}
	}
	return want
}

// abort writes the start of rec, up to the end of the page, as a server
// that crashed while writing it leaves it; the next page says the record
// was overwritten.
func (w *walBuilder) abort(rec buildRec) {
	b := w.encode(rec)
	w.align()
	room := w.pageSize - len(w.buf)%w.pageSize
	require.Less(w.t, room, len(b), "the record must span pages")
	w.write(b, room)
	w.overwrite = true
}

func (w *walBuilder) align() {
	for len(w.buf)%maxAlign != 0 {
		w.buf = append(w.buf, 0)
	}
}

// write lays out the first n bytes of b (a whole record of len(b) bytes)
// from the current position, with page headers as it crosses pages, and
// returns the LSN of its first byte.
func (w *walBuilder) write(b []byte, n int) LSN {
	if len(w.buf)%w.pageSize == 0 {
		w.pageHeader(0)
	}
	lsn := w.pos()
	done := 0
	for done < n {
		if len(w.buf)%w.pageSize == 0 {
			w.pageHeader(len(b) - done)
		}
		k := min(n-done, w.pageSize-len(w.buf)%w.pageSize)
		w.buf = append(w.buf, b[done:done+k]...)
		done += k
	}
	return lsn
}

func (w *walBuilder) pageHeader(remaining int) {
	info := uint16(0)
	long := len(w.buf)%w.segSize == 0
	if long {
		info |= xlpLongHeader
	}
	if remaining > 0 {
		info |= xlpFirstIsContRecord
	}
	if w.overwrite {
		info |= xlpFirstIsOverwriteRec
		w.overwrite = false
	}
	magic, _ := PageMagic(w.version * 10000)
	h := make([]byte, shortPageHeaderSize, LongHeaderSize)
	binary.LittleEndian.PutUint16(h[0:], magic)
	binary.LittleEndian.PutUint16(h[2:], info)
	binary.LittleEndian.PutUint32(h[4:], w.tli)
	binary.LittleEndian.PutUint64(h[8:], uint64(w.pos()))
	binary.LittleEndian.PutUint32(h[16:], uint32(remaining))
	if long {
		h = binary.LittleEndian.AppendUint64(h, w.sysID)
		h = binary.LittleEndian.AppendUint32(h, uint32(w.segSize))
		h = binary.LittleEndian.AppendUint32(h, uint32(w.pageSize))
	}
	w.buf = append(w.buf, h...)
}

// segment is one file's name and bytes.
type segment struct {
	name string
	data []byte
}

// segments cuts what was built into segment files, the last one filled
// with zeros.
func (w *walBuilder) segments() []segment {
	buf := append([]byte{}, w.buf...)
	for len(buf)%w.segSize != 0 {
		buf = append(buf, 0)
	}
	var segs []segment
	f := w.first
	for off := 0; off < len(buf); off += w.segSize {
		segs = append(segs, segment{name: f.String(), data: buf[off : off+w.segSize]})
		f = f.Next(int64(w.segSize))
	}
	return segs
}

// Records of the kinds the Summary reads.

func commitRec(xid uint32, t int64) buildRec {
	return buildRec{rmid: RmgrXact, info: xactCommit | 0x80, xid: xid,
		main: binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint64(nil, uint64(t)), 0x10)}
}

func abortRec(xid uint32, t int64) buildRec {
	return buildRec{rmid: RmgrXact, info: xactAbort, xid: xid, main: binary.LittleEndian.AppendUint64(nil, uint64(t))}
}

func restorePointRec(name string, t int64) buildRec {
	main := binary.LittleEndian.AppendUint64(nil, uint64(t))
	main = append(main, make([]byte, maxFNameLen)...)
	copy(main[8:], name)
	return buildRec{rmid: RmgrXLOG, info: xlogRestorePoint, main: main}
}

func switchRec() buildRec { return buildRec{rmid: RmgrXLOG, info: xlogSwitch} }

func heapRec(xid uint32, n int, blocks ...buildBlock) buildRec {
	return buildRec{rmid: 10, info: 0x00, xid: xid, blocks: blocks, main: make([]byte, n)}
}

// fill returns n bytes of a pattern that differs between records.
func fill(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}
