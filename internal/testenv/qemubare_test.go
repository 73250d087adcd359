package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBareQEMUWritesThroughTheDeviceAndStops(t *testing.T) {
	SkipIfShort(t)
	q := StartBareQEMU(t, BareQEMUConfig{DiskSize: 4 << 20})
	before := filepath.Join(q.Dir, "before.qcow2")
	q.CopyDisk(t, before)
	q.Write(t, 0x5a, 1<<20, 64<<10)
	assert.False(t, q.Identical(t, before, q.Disk), "the write must show on the disk")

	var nodes []struct {
		NodeName string `json:"node-name"`
		Image    struct {
			VirtualSize int64 `json:"virtual-size"`
		} `json:"image"`
	}
	q.Execute(t, "query-named-block-nodes", map[string]bool{"flat": true}, &nodes)
	found := false
	for _, n := range nodes {
		if n.NodeName == q.Node {
			found = true
			assert.EqualValues(t, 4<<20, n.Image.VirtualSize)
		}
	}
	assert.True(t, found, "node %s in %+v", q.Node, nodes)

	msg := fatalMessage(t, func(tb testing.TB) { q.IO(tb, "write -P 0x1 8M 64k") })
	assert.Contains(t, msg, "qemu-io write -P 0x1 8M 64k")

	q.Stop(t)
	q.Stop(t)
	_, err := os.Stat(q.QMPSocket)
	assert.True(t, os.IsNotExist(err), "QEMU removes its socket when it quits: %v", err)
}

func TestBareQEMUMissingBinaryNamesThePackages(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	msg := fatalMessage(t, func(tb testing.TB) { StartBareQEMU(tb, BareQEMUConfig{}) })
	require.Contains(t, msg, "apt-get install -y qemu-system-x86 qemu-utils")
}
