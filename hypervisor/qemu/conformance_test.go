package qemu

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
)

// The QEMU hypervisor passes the conformance suite on a real QEMU: its
// snapshots are Fixed, so the suite also writes to the disk between the
// snapshot and the export.
func TestConformance(t *testing.T) {
	var l *lab
	n := 0
	hypervisortest.Run(t, hypervisortest.Harness{
		New: func(t testing.TB) hypervisor.Hypervisor {
			l = newLab(t.(*testing.T), nil)
			return l.h
		},
		Machine: "vm1",
		Change: func(t testing.TB) {
			n++
			l.q.Write(t, byte(0x10+n), int64(n%8)*mib, mib)
		},
		State: func(t testing.TB) any {
			n++
			return l.copyDisk(t.(*testing.T), fmt.Sprintf("state-%d.qcow2", n))
		},
		Same: func(t testing.TB, target string, state any) bool {
			return l.q.Identical(t, target, state.(string))
		},
		Target: func(t testing.TB) string { return filepath.Join(t.TempDir(), "restored.qcow2") },
	})
}
