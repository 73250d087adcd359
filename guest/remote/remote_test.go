package remote

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitPaths(t *testing.T) {
	assert.Empty(t, splitPaths(nil, 100))
	paths := []string{"a", "bb", "ccc", strings.Repeat("d", 200), "e<>&"}
	runs := splitPaths(paths, 20)
	var joined []string
	for _, run := range runs {
		require.NotEmpty(t, run)
		b, err := json.Marshal(run)
		require.NoError(t, err)
		if len(run) > 1 {
			assert.LessOrEqual(t, len(b), 20+2, "a run of several paths fits the limit: %q", run)
		}
		joined = append(joined, run...)
	}
	assert.Equal(t, paths, joined, "every path once, in order")
	assert.Equal(t, [][]string{{strings.Repeat("d", 200)}}, splitPaths([]string{strings.Repeat("d", 200)}, 20))
}
