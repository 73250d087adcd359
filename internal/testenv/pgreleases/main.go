// Command pgreleases fetches every PostgreSQL release testenv knows
// (testenv.Releases) into testenv.ReleasesDir(), checked against its pinned
// integrity hash; scripts/setup runs it so the tests find them there. A
// release already fetched costs nothing.
package main

import (
	"fmt"
	"os"

	"github.com/pglogship/pglogship/internal/testenv"
)

func main() {
	for _, r := range testenv.Releases {
		if _, err := testenv.FetchRelease(r, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "pgreleases: PostgreSQL %d: %v\n", r.Major, err)
			os.Exit(1)
		}
	}
}
