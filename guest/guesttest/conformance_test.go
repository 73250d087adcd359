package guesttest_test

import (
	"fmt"
	"testing"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
)

// The fake passes the conformance suite it ships.
func TestFakeConformance(t *testing.T) {
	var g *guesttest.Guest
	n := 0
	guesttest.RunConformance(t, guesttest.Harness{
		New: func(testing.TB) (guest.Deployer, guest.Target) {
			g = guesttest.NewGuest(guest.Instance{Version: 150000, SystemID: 7, WALLevel: "replica", ArchiveMode: "on",
				Timeline: 1, WALSegmentSize: 16 << 20, Running: true})
			return guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g}), guest.Target{Machine: "vm1"}
		},
		Dir: func(testing.TB) string { return "/var/lib/pglogship/wal" },
		Archive: func(_ testing.TB, _ guest.Runtime, k int) map[string][]byte {
			for i := 0; i < k; i++ {
				n++
				g.SwitchWAL([]byte(fmt.Sprintf("segment %d", n)))
			}
			out := map[string][]byte{}
			for name, b := range g.Archived() {
				for _, w := range g.Waiting() {
					if w == name {
						out[name] = b
					}
				}
			}
			return out
		},
	})
}
