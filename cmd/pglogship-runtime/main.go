// Command pglogship-runtime is the runtime component a child session deploys
// into the guest OS. It speaks the protocol of package guest/proto on stdin
// and stdout and is meant to be started by a deployer, not by hand. Build it
// static: CGO_ENABLED=0 go build ./cmd/pglogship-runtime
package main

import (
	"os"

	"github.com/pglogship/pglogship/guest/runtime"
)

func main() { os.Exit(runtime.Main()) }
