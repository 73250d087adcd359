package hypervisortest_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
)

// The fake passes the conformance suite it ships.
func TestFakeConformance(t *testing.T) {
	var hv *hypervisortest.Fake
	n := 0
	hypervisortest.Run(t, hypervisortest.Harness{
		New: func(testing.TB) hypervisor.Hypervisor {
			hv = hypervisortest.New(clock.NewMock(), hypervisor.Machine{ID: "vm1"})
			hv.SetDisk("vm1", []byte("disk 0"))
			return hv
		},
		Machine: "vm1",
		Change:  func(testing.TB) { n++; hv.SetDisk("vm1", []byte(fmt.Sprintf("disk %d", n))) },
		State: func(t testing.TB) any {
			d, ok := hv.Disk("vm1")
			require.True(t, ok)
			return d
		},
		Same: func(t testing.TB, target string, state any) bool {
			b, err := os.ReadFile(target)
			require.NoError(t, err)
			return bytes.Equal(b, state.([]byte))
		},
		Target: func(t testing.TB) string { return filepath.Join(t.TempDir(), "restored") },
	})
}
