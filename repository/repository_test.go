package repository

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "job/vm-1/wal/00000001/bundle-0001.plb", "A.b_c-D", strings.Repeat("x", MaxNameLen)} {
		require.NoError(t, ValidName(ok), ok)
	}
	for _, bad := range []string{"", "/a", "a/", "a//b", ".", "..", "a/../b", ".tmp-x", "a/.hidden", "a b", "a\\b", "a\x00b", "ü", "a;rm -rf", strings.Repeat("x", MaxNameLen+1)} {
		require.ErrorIs(t, ValidName(bad), ErrInvalidName, "%q", bad)
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "a/.t", "x y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) != nil {
			return
		}
		// Whatever passes must be safe as a relative path on every backend.
		require.False(t, strings.HasPrefix(s, "/"))
		for _, p := range strings.Split(s, "/") {
			require.NotEqual(t, "..", p)
			require.NotEmpty(t, p)
		}
	})
}
