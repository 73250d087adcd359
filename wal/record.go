package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Record is one valid WAL record, as the Reader hands it to
// ReaderConfig.OnRecord.
type Record struct {
	LSN  LSN // where the record starts
	End  LSN // where it ends, rounded up to 8 bytes: the LSN PostgreSQL's XLogInsert returns for it
	Prev LSN // xl_prev: where the record before it starts

	XID      uint32 // xl_xid: the transaction that wrote it, 0 for none
	Rmid     uint8  // resource manager (RmgrXLOG, RmgrXact, ...)
	Info     uint8  // xl_info: the high four bits are the resource manager's opcode
	TotalLen uint32 // xl_tot_len: header, block references and data

	// MainData holds the first min(MainDataLen, ReaderConfig.MainDataLimit)
	// bytes of the record's main data. It is only valid during the
	// OnRecord call.
	MainData    []byte
	MainDataLen uint32
}

// Resource managers whose records the Summary reads.
const (
	RmgrXLOG uint8 = 0 // RM_XLOG_ID: checkpoints, switches, restore points, full-page images
	RmgrXact uint8 = 1 // RM_XACT_ID: commits, aborts, prepares
)

// DefaultMainDataLimit is ReaderConfig.MainDataLimit's default.
const DefaultMainDataLimit = 64 << 10

// minMainDataLimit is what the Summary needs: a restore point's main data.
const minMainDataLimit = restorePointSize

// ReaderConfig configures NewReader.
type ReaderConfig struct {
	// SegmentSize is the WAL segment size (a power of two from 1 MiB to 1
	// GiB). Zero takes it from the first segment's long page header; any
	// other value is checked against every segment's header.
	SegmentSize int64

	// OnRecord, if set, is called with every valid record in WAL order,
	// once the record's checksum has been verified. The Record is reused:
	// it and its MainData are only valid during the call. An error stops
	// the Reader: Write and Feed return it, now and from then on.
	OnRecord func(*Record) error

	// MainDataLimit is how much of each record's main data is kept for
	// OnRecord (default DefaultMainDataLimit, at least 72 bytes); longer
	// main data is passed on truncated, so memory stays bounded whatever
	// the record size.
	MainDataLimit int
}

// Sizes and flags of PostgreSQL's WAL format (access/xlog_internal.h,
// access/xlogrecord.h), the same from PostgreSQL 13 to 18, as 64-bit
// little-endian builds write it (WAL is in the server's byte order and
// alignment).
const (
	shortPageHeaderSize = 24 // SizeOfXLogShortPHD
	recordHeaderSize    = 24 // SizeOfXLogRecord
	recordCRCOffset     = 20 // offsetof(XLogRecord, xl_crc)
	maxAlign            = 8  // MAXALIGN of 64-bit builds

	xlpFirstIsContRecord   = 0x0001
	xlpFirstIsOverwriteRec = 0x0008
	xlpAllFlags            = 0x000F

	minSegmentSize = 1 << 20
	maxSegmentSize = 1 << 30
	minPageSize    = 1 << 10
	maxPageSize    = 64 << 10

	rmMaxBuiltinID = 21  // RM_LOGICALMSG_ID, the last built-in resource manager
	rmMinCustomID  = 128 // PostgreSQL 15 and later: custom resource managers

	xlogSwitch = 0x40 // XLOG_SWITCH

	// maxBlockHeaders bounds the block reference headers of one record:
	// 33 block references of at most 27 bytes plus the origin, top-level
	// xid and main data headers come to 904 bytes.
	maxBlockHeaders = 2048
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Reader reads the WAL records of consecutive segments of a timeline from
// their bytes, validating each one as PostgreSQL does (page headers,
// continuation records, the record header and its CRC-32C), and summarises
// them. Bytes stream through it: it holds a page header, a record's block
// headers and at most MainDataLimit bytes of main data, never a page or a
// record, so memory stays flat for any segment or record size.
//
// Valid WAL ends at zeroed or recycled space, a torn or corrupt record or
// a truncated segment: the Reader then records a Stop in the summary,
// ignores the rest of that segment, and picks up again at the next segment
// fed, skipping the continuation of a record that began before it, as it
// does for the first segment it reads. A record that began before a gap
// or a stop is not reported.
//
// Feed a segment with Feed, or with BeginSegment, Write and EndSegment to
// tap bytes that flow elsewhere (io.TeeReader). A Reader is not safe for
// concurrent use.
type Reader struct {
	onRecord   func(*Record) error
	mainLimit  int
	minSegSize int64 // minSegmentSize; tests lower it to fuzz with small segments

	// Learned from the first long page header (or the configuration) and
	// checked against every segment after.
	segSize  int64
	pageSize int64
	magic    uint16
	version  int // major version
	sysID    uint64

	open    bool
	name    FileName
	havePrv bool
	prvName FileName
	start   LSN   // the segment's first byte, once segSize is known
	off     int64 // bytes of the segment seen
	drop    bool  // ignore the rest of the segment: after a switch or a stop

	ph      [LongHeaderSize]byte
	st      state
	pad     int64  // alignment bytes before the next record
	skip    uint32 // continuation bytes of a record that began before the reader did
	prevLSN LSN    // the last valid record; 0 after a resync
	pageTLI uint32 // the last page's timeline, which may not go back
	rec     assembly

	seg, total Summary
	record     Record
	copyBuf    []byte
	err        error // sticky: a callback failed
}

// state is what the next payload byte of a page belongs to.
type state int

const (
	stResync state = iota // decided by the next page header: a continuation to skip, or a record
	stNone                // between records: alignment, then a new record
	stRecord              // inside a record
	stSkip                // inside a continuation that is not ours to read
)

// assembly is a record being read: its header, its block headers and the
// kept part of its main data. Everything else only passes through the CRC.
type assembly struct {
	lsn     LSN
	hdr     [recordHeaderSize]byte
	totLen  uint32
	got     uint32 // bytes of the record seen, header included
	crc     uint32
	blk     []byte // the start of the body, up to maxBlockHeaders bytes
	blkCap  uint32
	parsed  bool
	mainOff uint32 // the main data's offset in the body
	mainLen uint32
	main    []byte
	bad     string // the body does not decode: reported if the CRC holds
}

// NewReader returns a Reader for cfg.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if cfg.SegmentSize != 0 && !validSize(cfg.SegmentSize, minSegmentSize, maxSegmentSize) {
		return nil, fmt.Errorf("wal reader: segment size %d is not a power of two from 1 MiB to 1 GiB", cfg.SegmentSize)
	}
	switch {
	case cfg.MainDataLimit == 0:
		cfg.MainDataLimit = DefaultMainDataLimit
	case cfg.MainDataLimit < minMainDataLimit:
		return nil, fmt.Errorf("wal reader: main data limit %d below %d", cfg.MainDataLimit, minMainDataLimit)
	}
	return &Reader{onRecord: cfg.OnRecord, mainLimit: cfg.MainDataLimit, minSegSize: minSegmentSize,
		segSize: cfg.SegmentSize}, nil
}

func validSize(n, lo, hi int64) bool { return n >= lo && n <= hi && n&(n-1) == 0 }

// ValidSegmentSize tells whether n is a WAL segment size PostgreSQL
// allows: a power of two from 1 MiB to 1 GiB.
func ValidSegmentSize(n int64) bool { return validSize(n, minSegmentSize, maxSegmentSize) }

// Feed reads the segment name (a segment or .partial file name) from src
// and returns the summary of the records that ended in it. Errors are
// those of src, of OnRecord, or of misuse (a name out of order); invalid
// WAL is not an error but the summary's Stop.
func (r *Reader) Feed(name string, src io.Reader) (Summary, error) {
	if err := r.BeginSegment(name); err != nil {
		return Summary{}, err
	}
	if r.copyBuf == nil {
		r.copyBuf = make([]byte, 64<<10)
	}
	// The wrappers keep io.CopyBuffer from handing the work to src's
	// WriteTo, which would use buffers of its own choosing.
	_, err := io.CopyBuffer(struct{ io.Writer }{r}, struct{ io.Reader }{src}, r.copyBuf)
	sum, endErr := r.EndSegment()
	if err != nil {
		if !errors.Is(err, r.err) {
			err = fmt.Errorf("read wal segment %s: %w", name, err)
		}
		return sum, err
	}
	return sum, endErr
}

// BeginSegment starts the segment name; its bytes follow with Write, in
// order, and EndSegment ends it. A segment that does not follow the
// previous one (a gap) makes the Reader start afresh, as at its first
// segment; one that is not after the previous one is an error.
func (r *Reader) BeginSegment(name string) error {
	if r.err != nil {
		return r.err
	}
	if r.open {
		return fmt.Errorf("begin wal segment %s: segment %s not ended", name, r.name)
	}
	f, err := ParseFileName(name)
	if err != nil {
		return err
	}
	if f.Kind != Segment && f.Kind != Partial {
		return fmt.Errorf("begin wal segment %s: not a segment", name)
	}
	next := false
	if r.havePrv {
		after := f.Log > r.prvName.Log || f.Log == r.prvName.Log && f.Seg > r.prvName.Seg
		if !after {
			return fmt.Errorf("begin wal segment %s: not after %s", name, r.prvName)
		}
		if r.segSize > 0 {
			n := r.prvName.Next(r.segSize)
			next = n.Log == f.Log && n.Seg == f.Seg && f.Timeline >= r.prvName.Timeline
		}
	}
	if !next {
		r.resync()
	}
	r.open, r.name, r.off, r.drop = true, f, 0, false
	if r.segSize > 0 {
		r.start = f.StartLSN(r.segSize)
	}
	r.seg = Summary{Timeline: f.Timeline}
	if r.total.Timeline < f.Timeline {
		r.total.Timeline = f.Timeline
	}
	return nil
}

// resync forgets the record being read: the next page header decides
// where the next record starts.
func (r *Reader) resync() {
	r.st, r.pad, r.skip, r.prevLSN, r.pageTLI = stResync, 0, 0, 0, 0
}

// EndSegment ends the segment BeginSegment started and returns the summary
// of the records that ended in it (one that began in the previous segment
// counts here, so First may lie before the segment). If the segment was
// shorter than the segment size, valid WAL stops where its bytes ran out.
func (r *Reader) EndSegment() (Summary, error) {
	if !r.open {
		return Summary{}, errors.New("end wal segment: no segment begun")
	}
	r.open = false
	r.havePrv, r.prvName = true, r.name
	if !r.drop && (r.segSize == 0 || r.off < r.segSize) {
		at := r.start + LSN(r.off)
		if r.st == stRecord {
			at = r.rec.lsn
		}
		r.stop(at, fmt.Sprintf("wal segment %s ends after %d bytes", r.name, r.off))
	}
	sum := r.seg
	r.seg = Summary{}
	return sum, r.err
}

// Summary returns the summary of everything read so far.
func (r *Reader) Summary() Summary { return r.total.Merge(Summary{}) }

// Write feeds the next bytes of the current segment. It fails only when
// no segment was begun or when OnRecord failed.
func (r *Reader) Write(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.open {
		return 0, errors.New("write wal segment: no segment begun")
	}
	n := len(p)
	for len(p) > 0 && r.err == nil {
		k := r.step(p)
		r.off += int64(k)
		p = p[k:]
	}
	if r.err != nil {
		return n - len(p), r.err
	}
	return n, nil
}

// step consumes a prefix of p, which starts at r.off in the segment.
func (r *Reader) step(p []byte) int {
	if r.segSize > 0 && r.off >= r.segSize {
		if !r.drop {
			r.stop(r.start+LSN(r.off), fmt.Sprintf("wal segment %s longer than %d bytes", r.name, r.segSize))
		}
		return len(p)
	}
	if r.drop {
		if r.segSize > 0 {
			return int(min(int64(len(p)), r.segSize-r.off))
		}
		return len(p)
	}
	pageOff := r.off
	if r.pageSize > 0 {
		pageOff = r.off % r.pageSize
	}
	hs := int64(shortPageHeaderSize)
	if r.off-pageOff == 0 {
		hs = LongHeaderSize
	}
	if pageOff < hs {
		k := copy(r.ph[pageOff:hs], p)
		if pageOff+int64(k) == hs {
			r.pageHeader(r.ph[:hs], r.off-pageOff)
		}
		return k
	}
	end := int(min(int64(len(p)), r.pageSize-pageOff))
	return r.payload(p[:end], r.start+LSN(r.off))
}

// pageHeader checks the header of the page at offset pageOff of the segment
// as XLogReaderValidatePageHeader does and, with its continuation flags,
// decides what the page's first payload bytes belong to.
func (r *Reader) pageHeader(h []byte, pageOff int64) {
	magic := binary.LittleEndian.Uint16(h[0:])
	info := binary.LittleEndian.Uint16(h[2:])
	tli := binary.LittleEndian.Uint32(h[4:])
	addr := LSN(binary.LittleEndian.Uint64(h[8:]))
	remLen := binary.LittleEndian.Uint32(h[16:])
	fail := func(format string, args ...any) {
		at := r.start + LSN(pageOff)
		r.stop(at, fmt.Sprintf(format, args...)+fmt.Sprintf(" in wal segment %s, LSN %s, offset %d", r.name, at, pageOff))
	}
	if r.magic == 0 {
		v, ok := versionOfMagic(magic)
		if !ok {
			fail("unsupported page magic %04X", magic)
			return
		}
		r.magic, r.version = magic, v
	}
	switch {
	case magic != r.magic:
		fail("invalid magic number %04X", magic)
		return
	case info&^xlpAllFlags != 0 || (pageOff == 0) != (info&xlpLongHeader != 0):
		fail("invalid info bits %04X", info)
		return
	case pageOff == 0 && !r.firstPage(h):
		return
	}
	at := r.start + LSN(pageOff)
	switch {
	case addr != at:
		fail("unexpected pageaddr %s", addr)
		return
	case tli < r.pageTLI:
		fail("out-of-sequence timeline ID %d (after %d)", tli, r.pageTLI)
		return
	}
	r.pageTLI = tli
	r.pad = 0
	data := at + LSN(len(h))
	cont := info&xlpFirstIsContRecord != 0
	switch r.st {
	case stResync, stSkip:
		if cont {
			r.st, r.skip = stSkip, remLen
		} else {
			r.st = stNone
		}
	case stNone:
		if cont {
			r.stop(data, fmt.Sprintf("contrecord is requested by %s", data))
		}
	case stRecord:
		switch {
		case info&xlpFirstIsOverwriteRec != 0:
			// The rest of this record was never written: the server
			// crashed, and wrote on from here after recovery.
			r.st = stNone
		case !cont:
			r.stop(r.rec.lsn, fmt.Sprintf("there is no contrecord flag at %s", data))
		case remLen == 0 || remLen != r.rec.totLen-r.rec.got:
			r.stop(r.rec.lsn, fmt.Sprintf("invalid contrecord length %d (expected %d) at %s", remLen, r.rec.totLen-r.rec.got, data))
		}
	}
}

// firstPage checks the long header of a segment's first page against what
// the Reader knows or, for the first segment, learns it.
func (r *Reader) firstPage(h []byte) bool {
	sysID := binary.LittleEndian.Uint64(h[24:])
	segSize := int64(binary.LittleEndian.Uint32(h[32:]))
	pageSize := int64(binary.LittleEndian.Uint32(h[36:]))
	fail := func(format string, args ...any) bool {
		r.stop(r.start, fmt.Sprintf("wal segment %s: ", r.name)+fmt.Sprintf(format, args...))
		return false
	}
	if r.segSize == 0 {
		if !validSize(segSize, r.minSegSize, maxSegmentSize) {
			return fail("invalid segment size %d in page header", segSize)
		}
		r.segSize = segSize
		r.start = r.name.StartLSN(segSize)
	} else if segSize != r.segSize {
		return fail("segment size %d in page header, want %d", segSize, r.segSize)
	}
	if r.pageSize == 0 {
		if !validSize(pageSize, minPageSize, maxPageSize) || pageSize > r.segSize {
			return fail("invalid XLOG_BLCKSZ %d in page header", pageSize)
		}
		r.pageSize = pageSize
	} else if pageSize != r.pageSize {
		return fail("XLOG_BLCKSZ %d in page header, want %d", pageSize, r.pageSize)
	}
	if r.sysID == 0 {
		r.sysID = sysID
	} else if sysID != r.sysID {
		return fail("database system identifier %d, earlier segments have %d", sysID, r.sysID)
	}
	return true
}

func versionOfMagic(magic uint16) (int, bool) {
	for v, m := range pageMagic {
		if m == magic {
			return v, true
		}
	}
	return 0, false
}

// payload consumes a prefix of p, page payload starting at lsn.
func (r *Reader) payload(p []byte, lsn LSN) int {
	switch r.st {
	case stSkip:
		k := uint32(min(uint64(len(p)), uint64(r.skip)))
		r.skip -= k
		if r.skip == 0 {
			r.st, r.pad = stNone, padding(lsn+LSN(k))
		}
		return int(k)
	case stNone:
		if r.pad > 0 {
			k := min(int64(len(p)), r.pad)
			r.pad -= k
			return int(k)
		}
		r.st = stRecord
		r.rec.reset(lsn)
		return 0
	case stRecord:
		return r.recordBytes(p, lsn)
	}
	// stResync is settled by every page header, which comes first.
	r.stop(lsn, "internal error: payload before page header")
	return len(p)
}

func padding(l LSN) int64 { return int64(-l & (maxAlign - 1)) }

func (a *assembly) reset(lsn LSN) {
	a.lsn, a.totLen, a.got, a.crc = lsn, 0, 0, 0
	a.blk, a.blkCap, a.parsed = a.blk[:0], 0, false
	a.mainOff, a.mainLen, a.main, a.bad = 0, 0, a.main[:0], ""
}

// recordBytes consumes a prefix of p, the next bytes of the current record.
func (r *Reader) recordBytes(p []byte, lsn LSN) int {
	a := &r.rec
	if a.got < recordHeaderSize {
		k := copy(a.hdr[a.got:], p)
		a.got += uint32(k)
		if a.got >= 4 && a.totLen == 0 {
			a.totLen = binary.LittleEndian.Uint32(a.hdr[0:])
			if a.totLen < recordHeaderSize {
				r.stop(a.lsn, fmt.Sprintf("invalid record length at %s: expected at least %d, got %d", a.lsn, recordHeaderSize, a.totLen))
				return k
			}
		}
		if a.got == recordHeaderSize && r.header() {
			a.blkCap = min(a.totLen-recordHeaderSize, maxBlockHeaders)
			if a.blkCap == 0 {
				r.parseBlocks()
			}
			if a.totLen == recordHeaderSize {
				r.finish(lsn + LSN(k))
			}
		}
		return k
	}
	k := int(min(uint32(len(p)), a.totLen-a.got))
	chunk := p[:k]
	a.crc = crc32.Update(a.crc, castagnoli, chunk)
	off := a.got - recordHeaderSize
	if uint32(len(a.blk)) < a.blkCap {
		n := min(uint32(len(chunk)), a.blkCap-uint32(len(a.blk)))
		a.blk = append(a.blk, chunk[:n]...)
		if uint32(len(a.blk)) == a.blkCap {
			r.parseBlocks()
		}
	}
	if a.parsed {
		r.keepMain(chunk, off)
	}
	a.got += uint32(k)
	if a.got == a.totLen {
		r.finish(lsn + LSN(k))
	}
	return k
}

// header checks a complete record header as ValidXLogRecordHeader does.
func (r *Reader) header() bool {
	a := &r.rec
	rmid := a.hdr[17]
	prev := LSN(binary.LittleEndian.Uint64(a.hdr[8:]))
	if rmid > rmMaxBuiltinID && (r.version < 15 || rmid < rmMinCustomID) {
		r.stop(a.lsn, fmt.Sprintf("invalid resource manager ID %d at %s", rmid, a.lsn))
		return false
	}
	if r.prevLSN != 0 && prev != r.prevLSN || r.prevLSN == 0 && prev >= a.lsn {
		r.stop(a.lsn, fmt.Sprintf("record with incorrect prev-link %s at %s", prev, a.lsn))
		return false
	}
	return true
}

// keepMain keeps the bytes of chunk, at offset off of the body, that
// belong to the kept part of the main data.
func (r *Reader) keepMain(chunk []byte, off uint32) {
	a := &r.rec
	want := a.mainOff + uint32(len(a.main))
	stop := a.mainOff + min(a.mainLen, uint32(r.mainLimit))
	end := off + uint32(len(chunk))
	if want >= stop || want < off || want >= end {
		return
	}
	a.main = append(a.main, chunk[want-off:min(end, stop)-off]...)
}

// finish checks a complete record's CRC and hands it on; end is the LSN
// just after its last byte.
func (r *Reader) finish(end LSN) {
	a := &r.rec
	crc := crc32.Update(a.crc, castagnoli, a.hdr[:recordCRCOffset])
	if crc != binary.LittleEndian.Uint32(a.hdr[recordCRCOffset:]) {
		r.stop(a.lsn, fmt.Sprintf("incorrect resource manager data checksum in record at %s", a.lsn))
		return
	}
	if a.bad != "" {
		r.stop(a.lsn, a.bad)
		return
	}
	rec := &r.record
	*rec = Record{
		LSN: a.lsn, End: end + LSN(padding(end)), Prev: LSN(binary.LittleEndian.Uint64(a.hdr[8:])),
		XID: binary.LittleEndian.Uint32(a.hdr[4:]), Info: a.hdr[16], Rmid: a.hdr[17], TotalLen: a.totLen,
		MainData: a.main, MainDataLen: a.mainLen,
	}
	r.seg.add(rec)
	r.total.add(rec)
	r.prevLSN = a.lsn
	r.st, r.pad = stNone, padding(end)
	if rec.Rmid == RmgrXLOG && rec.Info&^0x0F == xlogSwitch {
		// The rest of the segment is unused.
		r.drop = true
	}
	if r.onRecord != nil {
		if err := r.onRecord(rec); err != nil {
			r.err = fmt.Errorf("wal record at %s: %w", rec.LSN, err)
		}
	}
}

// stop ends valid WAL at lsn: the rest of the segment is ignored, and the
// next segment starts afresh.
func (r *Reader) stop(lsn LSN, reason string) {
	s := &Stop{LSN: lsn, Reason: reason}
	if r.seg.Stop == nil {
		r.seg.Stop = s
	}
	if r.total.Stop == nil {
		r.total.Stop = s
	}
	r.drop = true
	r.resync()
}

// Block reference ids and flags (access/xlogrecord.h).
const (
	blockIDMax       = 32  // XLR_MAX_BLOCK_ID
	blockIDTopXID    = 252 // XLR_BLOCK_ID_TOPLEVEL_XID
	blockIDOrigin    = 253 // XLR_BLOCK_ID_ORIGIN
	blockIDDataLong  = 254 // XLR_BLOCK_ID_DATA_LONG
	blockIDDataShort = 255 // XLR_BLOCK_ID_DATA_SHORT

	bkpBlockHasImage = 0x10
	bkpBlockHasData  = 0x20
	bkpBlockSameRel  = 0x80

	bkpImageHasHole = 0x01
	// PostgreSQL 13 and 14 have one compression flag; 15 and later one per
	// method (pglz, lz4, zstd).
	bkpImageCompressed14 = 0x02
	bkpImageCompressed15 = 0x04 | 0x08 | 0x10

	relFileLocatorSize = 12
)

// parseBlocks walks the block reference headers at the start of the body,
// as DecodeXLogRecord does, to find where the main data lies. A record
// whose headers do not add up is marked bad.
func (r *Reader) parseBlocks() {
	a := &r.rec
	a.parsed = true
	body := a.totLen - recordHeaderSize
	mainLen, bad := blockHeaders(a.blk, body, r.version >= 15)
	if bad != "" {
		a.bad = fmt.Sprintf("%s at %s", bad, a.lsn)
		return
	}
	a.mainOff, a.mainLen = body-mainLen, mainLen
	r.keepMain(a.blk, 0)
}

// blockHeaders decodes the headers in b, the first bytes of a record body
// of length body, and returns the main data length.
func blockHeaders(b []byte, body uint32, pg15 bool) (uint32, string) {
	compressed := uint8(bkpImageCompressed14)
	if pg15 {
		compressed = bkpImageCompressed15
	}
	const (
		ok = iota
		shortData
		tooLong
	)
	var zero [relFileLocatorSize]byte
	remaining := uint64(body)
	var total uint64 // payload bytes announced so far
	p, fail := 0, ok
	take := func(n int) []byte {
		switch {
		case fail != ok:
		case remaining < uint64(n):
			fail = shortData
		case p+n > len(b):
			fail = tooLong
		default:
			s := b[p : p+n]
			p += n
			remaining -= uint64(n)
			return s
		}
		return zero[:n]
	}
	maxID := -1
	haveRel := false
	var mainLen uint32
	for remaining > total && fail == ok {
		id := take(1)[0]
		if fail != ok {
			break
		}
		switch {
		case id == blockIDDataShort:
			mainLen = uint32(take(1)[0])
			total += uint64(mainLen)
		case id == blockIDDataLong:
			mainLen = binary.LittleEndian.Uint32(take(4))
			total += uint64(mainLen)
		case id == blockIDOrigin:
			take(2)
			continue
		case id == blockIDTopXID:
			take(4)
			continue
		case id <= blockIDMax:
			if int(id) <= maxID {
				return 0, fmt.Sprintf("out-of-order block_id %d", id)
			}
			maxID = int(id)
			flags := take(1)[0]
			dataLen := binary.LittleEndian.Uint16(take(2))
			if fail == ok && (flags&bkpBlockHasData != 0) != (dataLen != 0) {
				return 0, fmt.Sprintf("BKPBLOCK_HAS_DATA flag %t with data length %d", flags&bkpBlockHasData != 0, dataLen)
			}
			total += uint64(dataLen)
			if flags&bkpBlockHasImage != 0 {
				img := take(5)
				imgLen := binary.LittleEndian.Uint16(img[0:])
				holeOff := binary.LittleEndian.Uint16(img[2:])
				info := img[4]
				hasHole := info&bkpImageHasHole != 0
				if info&compressed != 0 && hasHole && binary.LittleEndian.Uint16(take(2)) == 0 && fail == ok {
					return 0, "BKPIMAGE_HAS_HOLE set, but hole length 0"
				}
				if hasHole != (holeOff != 0) && fail == ok {
					return 0, fmt.Sprintf("BKPIMAGE_HAS_HOLE %t, but hole offset %d", hasHole, holeOff)
				}
				total += uint64(imgLen)
			}
			if flags&bkpBlockSameRel == 0 {
				take(relFileLocatorSize)
				haveRel = true
			} else if !haveRel {
				return 0, "BKPBLOCK_SAME_REL set but no previous rel"
			}
			take(4) // block number
			continue
		default:
			return 0, fmt.Sprintf("invalid block_id %d", id)
		}
		break // the main data header comes last
	}
	switch {
	case fail == tooLong:
		return 0, fmt.Sprintf("block headers longer than %d bytes", maxBlockHeaders)
	case fail == shortData || remaining != total:
		return 0, "record with invalid length"
	}
	return mainLen, ""
}
