package wal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidLSN is returned (wrapped) when text is not a PostgreSQL LSN.
var ErrInvalidLSN = errors.New("invalid lsn")

// LSN is a PostgreSQL log sequence number: a byte position in the WAL stream.
// The zero LSN (0/0) means "none" in PostgreSQL and here.
type LSN uint64

// String formats the LSN the way PostgreSQL prints pg_lsn: two hexadecimal
// halves separated by a slash, upper case, without leading zeros.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// ParseLSN parses PostgreSQL's text form "XXXXXXXX/XXXXXXXX" (either case,
// one to eight hex digits on each side).
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || !isHex32(hi) || !isHex32(lo) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidLSN, s)
	}
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	return LSN(h<<32 | l), nil
}

// isHex32 accepts 1 to 8 hex digits; strconv alone would also take signs and
// underscores, which pg_lsn does not.
func isHex32(s string) bool {
	if len(s) == 0 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// MarshalText implements encoding.TextMarshaler.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
