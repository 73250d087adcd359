package runtime

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The runtime's flags reach it whether it is its own executable or a host
// program's that selects it with a word ("pglogship runtime"), as the SSH
// deployer starts either; fetch mode keeps its words.
func TestFlagArgsAfterTheSelectingWords(t *testing.T) {
	flags := []string{"-lock", "/g/rt/lock", "-clean", "/g"}
	assert.Equal(t, flags, flagArgs(flags))
	assert.Equal(t, flags, flagArgs(append([]string{"runtime"}, flags...)))
	fetch := []string{"runtime", "fetch", "/spool/s.sock", "000000010000000000000003", "pg_wal/RECOVERYXLOG"}
	assert.Equal(t, fetch, flagArgs(fetch))
	assert.Empty(t, flagArgs(nil))
}
