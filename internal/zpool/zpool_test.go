package zpool

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// Encoders and decoders given back come out again working on a new
// stream, none holding on to the last one's bytes.
func TestReuse(t *testing.T) {
	for i := 0; i < 3*poolSize; i++ {
		raw := bytes.Repeat([]byte{byte(i), 'w', 'a', 'l'}, 100000+i)
		var z bytes.Buffer
		e := GetEncoder(&z)
		_, err := e.Write(raw)
		require.NoError(t, err)
		require.NoError(t, e.Close())
		PutEncoder(e)
		d, err := GetDecoder(&z)
		require.NoError(t, err)
		got, err := io.ReadAll(d)
		require.NoError(t, err)
		PutDecoder(d)
		require.Equal(t, raw, got, "round %d", i)
	}
}
