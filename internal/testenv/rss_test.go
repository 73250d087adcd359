package testenv

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A shell whose child burned CPU and exited: the child's time is the
// tree's (through the shell's cutime), not the shell's own.
func TestTreeCPUTimeCountsExitedDescendants(t *testing.T) {
	cmd := exec.Command("sh", "-c", `(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done); echo done; exec sleep 30`)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	buf := make([]byte, 5)
	_, err = out.Read(buf) // "done": the busy child has been waited for
	require.NoError(t, err)
	before := TreeCPUTime(cmd.Process.Pid)
	own := CPUTime([]int{cmd.Process.Pid}, "")
	assert.GreaterOrEqual(t, before, 100*time.Millisecond, "the busy child's CPU")
	assert.Less(t, own, before/2, "the shell's own CPU is not the child's")
	assert.Zero(t, TreeCPUTime(1<<30), "no such process")
}
