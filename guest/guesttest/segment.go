package guesttest

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/pglogship/pglogship/wal"
)

// SwitchSegment is SwitchWAL with content that is valid WAL, as
// pg_switch_wal leaves a segment (Segment), followed by payload.
func (g *Guest) SwitchSegment(payload []byte) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.nextLocked()
	g.addLocked(f.String(), Segment(f, g.segSize(), g.inst.SystemID, g.version(), payload))
	return f.String()
}

func (g *Guest) version() int {
	if g.inst.Version == 0 {
		return 150000
	}
	return g.inst.Version
}

// Segment returns the start of a WAL segment f of segSize bytes of the
// cluster sysID on PostgreSQL serverVersion: its long page header and one
// XLOG_SWITCH record, whose xl_prev is the switch record of the segment
// before, then payload, which a reader skips like the rest of a switched
// segment. A WAL reader reads it to the end without a stop.
func Segment(f wal.FileName, segSize int64, sysID uint64, serverVersion int, payload []byte) []byte {
	const (
		longHeader = 40     // SizeOfXLogLongPHD, MAXALIGNed
		recordLen  = 24     // SizeOfXLogRecord: a switch record has no data
		pageSize   = 8192   // XLOG_BLCKSZ
		longFlag   = 0x0002 // XLP_LONG_HEADER
		xlogSwitch = 0x40
	)
	magic, _ := wal.PageMagic(serverVersion)
	start := f.StartLSN(segSize)
	b := make([]byte, longHeader+recordLen, longHeader+recordLen+len(payload))
	le := binary.LittleEndian
	le.PutUint16(b[0:], magic)
	le.PutUint16(b[2:], longFlag)
	le.PutUint32(b[4:], f.Timeline)
	le.PutUint64(b[8:], uint64(start))
	le.PutUint32(b[16:], 0) // xlp_rem_len: no record continues here
	le.PutUint64(b[24:], sysID)
	le.PutUint32(b[32:], uint32(segSize))
	le.PutUint32(b[36:], pageSize)
	rec := b[longHeader:]
	le.PutUint32(rec[0:], recordLen)
	le.PutUint32(rec[4:], 0) // xl_xid
	prev := uint64(longHeader)
	if uint64(start) > uint64(segSize) {
		prev = uint64(start) - uint64(segSize) + longHeader
	}
	le.PutUint64(rec[8:], prev)
	rec[16], rec[17] = xlogSwitch, wal.RmgrXLOG
	// xl_crc: CRC-32C of the data after the header (none), then of the
	// header up to the CRC.
	crc := crc32.Checksum(rec[:20], crc32.MakeTable(crc32.Castagnoli))
	le.PutUint32(rec[20:], crc)
	return append(b, payload...)
}
