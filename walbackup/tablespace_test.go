package walbackup_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/walbackup"
)

// escapeTablespaceMap writes spaces as PostgreSQL writes tablespace_map.
func escapeTablespaceMap(spaces []walbackup.Tablespace) string {
	var b strings.Builder
	for _, ts := range spaces {
		b.WriteString(strconv.FormatUint(uint64(ts.OID), 10) + " ")
		for _, c := range []byte(ts.Path) {
			if c == '\n' || c == '\r' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestParseTablespaceMap(t *testing.T) {
	got, err := walbackup.ParseTablespaceMap("16436 /srv/ts one\n16500 /srv/odd\\\nname\\\\x\\\r\n\n")
	require.NoError(t, err)
	assert.Equal(t, []walbackup.Tablespace{{OID: 16436, Path: "/srv/ts one"}, {OID: 16500, Path: "/srv/odd\nname\\x\r"}}, got)
	got, err = walbackup.ParseTablespaceMap("")
	require.NoError(t, err)
	assert.Empty(t, got)
	got, err = walbackup.ParseTablespaceMap("1 /a\r2 /b")
	require.NoError(t, err, "an unescaped carriage return ends a line, as PostgreSQL reads it")
	assert.Equal(t, []walbackup.Tablespace{{OID: 1, Path: "/a"}, {OID: 2, Path: "/b"}}, got)
	for _, bad := range []string{"16436\n", "x /a\n", "0 /a\n", "016436 /a\n", "-1 /a\n", "4294967296 /a\n", "16436 \n", "1 /a\n1 /b\n", " 1 /a\n"} {
		_, err := walbackup.ParseTablespaceMap(bad)
		assert.Error(t, err, "%q", bad)
	}
}

// Whatever a repository holds, parsing never panics, and what it gives
// back is written and read again unchanged.
func FuzzParseTablespaceMap(f *testing.F) {
	f.Add("16436 /srv/ts\n")
	f.Add("1 /a\\\nb\r2 /c\\\\\n")
	f.Fuzz(func(t *testing.T, s string) {
		spaces, err := walbackup.ParseTablespaceMap(s)
		if err != nil {
			return
		}
		seen := map[uint32]bool{}
		for _, ts := range spaces {
			require.NotZero(t, ts.OID)
			require.NotEmpty(t, ts.Path)
			require.False(t, seen[ts.OID], "OID %d twice", ts.OID)
			seen[ts.OID] = true
		}
		again, err := walbackup.ParseTablespaceMap(escapeTablespaceMap(spaces))
		require.NoError(t, err)
		require.Equal(t, spaces, again)
	})
}
