package qemu

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// qcow2 header fields this package reads (big-endian; QEMU's
// docs/interop/qcow2.txt).
const (
	qcow2Magic          = 0x514649fb // "QFI\xfb"
	qcow2V2HeaderLength = 72
	qcow2MaxCluster     = 2 << 20 // cluster_bits at most 21: the header and its extensions lie within

	qcow2ExtEnd          = 0x00000000
	qcow2ExtBackingFmt   = 0xe2792aca
	qcow2ExtFeatureTable = 0x6803f857
	qcow2ExtBitmaps      = 0x23852875
	qcow2ExtCrypto       = 0x0537be77
	qcow2ExtDataFile     = 0x44415441

	qcow2IncompatDataFile = 1 << 2
)

// checkQcow2 reads the header of the qcow2 file at path, before qemu-img
// opens it, and refuses (ErrUnsafeImage) anything that would make qemu-img
// open another file or that this package never writes: a backing file, an
// external data file, encryption, a header extension it does not know. The
// virtual size must be size. The header and its extensions lie in the
// first cluster, so what is read is bounded.
func checkQcow2(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, qcow2MaxCluster))
	if err != nil {
		return fmt.Errorf("read qcow2 header: %w", err)
	}
	hdr, err := parseQcow2(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafeImage, err)
	}
	if hdr.size != uint64(size) {
		return fmt.Errorf("%w: virtual size %d, the image records %d", ErrUnsafeImage, hdr.size, size)
	}
	return nil
}

type qcow2Header struct {
	version uint32
	size    uint64
}

// parseQcow2 checks the qcow2 header at the start of b, which holds the
// file's first qcow2MaxCluster bytes (or all of a shorter file).
func parseQcow2(b []byte) (qcow2Header, error) {
	be := binary.BigEndian
	if len(b) < qcow2V2HeaderLength || be.Uint32(b) != qcow2Magic {
		return qcow2Header{}, fmt.Errorf("not a qcow2 file")
	}
	h := qcow2Header{version: be.Uint32(b[4:]), size: be.Uint64(b[24:])}
	clusterBits := be.Uint32(b[20:])
	switch {
	case h.version != 2 && h.version != 3:
		return h, fmt.Errorf("qcow2 version %d", h.version)
	case be.Uint64(b[8:]) != 0 || be.Uint32(b[16:]) != 0:
		return h, fmt.Errorf("its header names a backing file")
	case clusterBits < 9 || clusterBits > 21:
		return h, fmt.Errorf("cluster bits %d", clusterBits)
	case be.Uint32(b[32:]) != 0:
		return h, fmt.Errorf("it is encrypted (method %d)", be.Uint32(b[32:]))
	}
	extStart := uint32(qcow2V2HeaderLength)
	if h.version == 3 {
		if len(b) < 104 {
			return h, fmt.Errorf("version 3 header cut short")
		}
		if be.Uint64(b[72:])&qcow2IncompatDataFile != 0 {
			return h, fmt.Errorf("it keeps its data in an external file")
		}
		extStart = be.Uint32(b[100:])
		if extStart < 104 || extStart%8 != 0 {
			return h, fmt.Errorf("header length %d", extStart)
		}
	}
	clusterSize := 1 << clusterBits
	if int(extStart) >= clusterSize {
		return h, fmt.Errorf("header length %d past the first cluster", extStart)
	}
	if len(b) > clusterSize {
		b = b[:clusterSize]
	}
	for off := int(extStart); ; {
		if off+8 > len(b) {
			return h, fmt.Errorf("header extensions run past the first cluster")
		}
		typ, n := be.Uint32(b[off:]), int(be.Uint32(b[off+4:]))
		switch typ {
		case qcow2ExtEnd:
			return h, nil
		case qcow2ExtBackingFmt:
			return h, fmt.Errorf("its header names a backing file format")
		case qcow2ExtDataFile:
			return h, fmt.Errorf("its header names an external data file")
		case qcow2ExtCrypto:
			return h, fmt.Errorf("its header carries an encryption header")
		case qcow2ExtFeatureTable, qcow2ExtBitmaps:
		default:
			return h, fmt.Errorf("unknown header extension %#x", typ)
		}
		off += 8 + (n+7)&^7
		if n < 0 || off > len(b) {
			return h, fmt.Errorf("header extension %#x runs past the first cluster", typ)
		}
	}
}
