package guest

import (
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestCheckDataPath(t *testing.T) {
	for _, p := range []string{"PG_VERSION", "base/1/1259", "pg_tblspc/16384/PG_16_202307071/5/16385", "a b", `odd\name`, "..x", "x.."} {
		require.NoError(t, CheckDataPath(p), p)
	}
	for _, p := range []string{"", ".", "..", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a/", "a//b", "a/./b",
		"a\x00b", "bad\xff", strings.Repeat("a", MaxDataPath+1)} {
		require.ErrorIs(t, CheckDataPath(p), ErrUnsafePath, "%q", p)
	}
}

// FuzzCheckDataPath: an accepted path is relative, clean, valid UTF-8 and
// never climbs out, whatever the input.
func FuzzCheckDataPath(f *testing.F) {
	for _, s := range []string{"base/1/1259", "../x", "/abs", "a//b", "pg_tblspc/1/..", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CheckDataPath(p) != nil {
			return
		}
		require.NotEmpty(t, p)
		require.False(t, path.IsAbs(p))
		require.Equal(t, path.Clean(p), p)
		require.True(t, utf8.ValidString(p))
		require.NotContains(t, "/"+p+"/", "/../")
		require.NotEqual(t, ".", p)
	})
}
