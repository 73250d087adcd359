package checksum_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository/checksum"
)

// Published digests: XXH3-128 of nothing (xxHash's own test vectors) and
// SHA-256 of "abc" (FIPS 180-2).
func TestKnownDigests(t *testing.T) {
	assert.Equal(t, "xxh3:99aa06d3014798d86001c324468d497f", checksum.Of(checksum.XXH3, nil).String())
	assert.Equal(t, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", checksum.Of(checksum.SHA256, []byte("abc")).String())
}

// Streamed in pieces of every size, the Hash gives what Of gives at
// once, for both algorithms, and Reset starts over.
func TestStreamedEqualsWhole(t *testing.T) {
	data := make([]byte, 3<<20+17)
	rand.NewChaCha8([32]byte{7}).Read(data)
	for _, a := range []checksum.Algorithm{checksum.SHA256, checksum.XXH3} {
		want := checksum.Of(a, data)
		assert.Equal(t, a, want.Algorithm)
		h := checksum.New(a)
		h.Write([]byte("something else first"))
		h.Reset()
		for rest, n := data, 1; len(rest) > 0; n = n*3 + 1 {
			k := min(n, len(rest))
			h.Write(rest[:k])
			rest = rest[k:]
		}
		assert.Equal(t, want, h.Sum(), a)
		assert.Len(t, want.Bytes(), a.Size())
		for _, b := range want.Digest[a.Size():] {
			require.Zero(t, b, "%v: padded with zeros", a)
		}
	}
	assert.NotEqual(t, checksum.Of(checksum.XXH3, data), checksum.Of(checksum.XXH3, data[1:]))
}

// Text round-trips; sums of the two algorithms never compare equal, even
// over the same digest bytes.
func TestTextAndEquality(t *testing.T) {
	for _, s := range []checksum.Sum{checksum.Of(checksum.SHA256, []byte("x")), checksum.Of(checksum.XXH3, []byte("x"))} {
		got, err := checksum.Parse(s.String())
		require.NoError(t, err)
		assert.Equal(t, s, got)
		b, err := json.Marshal(struct{ S checksum.Sum }{s})
		require.NoError(t, err)
		var back struct{ S checksum.Sum }
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, s, back.S)
	}
	x := checksum.Of(checksum.XXH3, []byte("x"))
	assert.NotEqual(t, x, checksum.FromBytes(checksum.SHA256, x.Digest[:]))
	assert.True(t, checksum.Sum{}.IsZero())
	assert.False(t, x.IsZero())
}

func TestParseRefusesMalformed(t *testing.T) {
	for _, text := range []string{
		"",
		"99aa06d3014798d86001c324468d497f",            // no algorithm
		"md5:99aa06d3014798d86001c324468d497f",        // unknown algorithm
		"xxh3:99aa06d3014798d86001c324468d49",         // short
		"xxh3:99aa06d3014798d86001c324468d497f00",     // long
		"sha256:99aa06d3014798d86001c324468d497f",     // an XXH3 length
		"xxh3:zzaa06d3014798d86001c324468d497f",       // not hex
		"XXH3:99aa06d3014798d86001c324468d497f",       // names are lower case
		"xxh3:99aa06d3014798d86001c324468d497f:extra", // trailing
	} {
		_, err := checksum.Parse(text)
		assert.ErrorIs(t, err, checksum.ErrMalformed, "%q", text)
	}
	_, err := checksum.Sum{Algorithm: 9}.MarshalText()
	assert.Error(t, err)
}
