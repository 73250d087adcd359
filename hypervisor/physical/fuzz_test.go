package physical

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeIndex: whatever bytes an index object holds, decoding gives an
// index that keeps every rule, or an error; never a panic. What decodes
// encodes and decodes again to the same.
func FuzzDecodeIndex(f *testing.F) {
	f.Add([]byte(`{"version":1,"machine":"m1","prefix":"p/full","files":[{"path":".","dir":true,"size":0,"mtime":1,"mode":448},` +
		`{"path":"PG_VERSION","size":3,"mtime":2,"mode":384,"sha256":"` + sha64 + `","image":"p/full"}]}`))
	f.Add([]byte(`{"version":1,"machine":"m1","prefix":"p/inc","base":"p/full","files":[{"path":".","dir":true,"size":0,"mtime":1,"mode":448},` +
		`{"path":"../x","size":3,"mtime":2,"mode":384,"sha256":"` + sha64 + `","image":"p/full"}]}`))
	f.Add([]byte(`{"version":1,"files":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := decodeIndex(data)
		if err != nil {
			return
		}
		require.NoError(t, idx.validate())
		b, err := encodeIndex(idx)
		require.NoError(t, err)
		again, err := decodeIndex(b)
		require.NoError(t, err)
		require.Equal(t, idx, again)
	})
}

const sha64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
