package session

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCanTransition(t *testing.T) {
	allowed := map[[2]State]bool{
		{StateStarting, StateStarting}: true,
		{StateStarting, StateWorking}:  true,
		{StateWorking, StateWorking}:   true,
	}
	all := []State{StateStarting, StateWorking, StateSuccess, StateWarning, StateFailed, StateStopped}
	for _, from := range all {
		for _, to := range all {
			want := allowed[[2]State{from, to}] || !from.Final() && to.Final()
			assert.Equal(t, want, CanTransition(from, to), "%s -> %s", from, to)
		}
	}
	assert.False(t, CanTransition("bogus", StateWorking))
	assert.False(t, CanTransition(StateWorking, "bogus"))
}

func TestCursorRoundTrip(t *testing.T) {
	c := Cursor{Start: time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC), ID: "abc:def"}
	got, err := ParseCursor(c.String())
	require.NoError(t, err)
	assert.True(t, c.Start.Equal(got.Start))
	assert.Equal(t, c.ID, got.ID, "ids may contain the separator")
}

func TestNormalize(t *testing.T) {
	in := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.FixedZone("X", 7200))
	got := Normalize(in)
	assert.Equal(t, time.UTC, got.Location())
	assert.Equal(t, 678901000, got.Nanosecond())
	assert.True(t, Normalize(time.Time{}).IsZero())
}

func FuzzParseCursor(f *testing.F) {
	f.Add(Cursor{Start: time.Unix(1700000000, 0), ID: "x"}.String())
	f.Add("")
	f.Add("Zm9vOmJhcg")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := ParseCursor(token)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidCursor)
			return
		}
		again, err := ParseCursor(c.String())
		require.NoError(t, err)
		require.True(t, c.Start.Equal(again.Start))
		require.Equal(t, c.ID, again.ID)
	})
}
