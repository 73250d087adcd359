// Command tcpfwd connects its standard input and output to a TCP address
// on the host: QEMU's guestfwd runs it for each connection a guest makes
// to a forwarded address, so a guest on a restricted user-mode network
// reaches exactly one host service (on loopback) and nothing else.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// Its stderr is the connection too, so errors go to the log file named by
// the second argument.
func main() {
	if len(os.Args) != 3 || !strings.HasPrefix(os.Args[1], "127.0.0.1:") {
		fmt.Fprintln(os.Stderr, "usage: tcpfwd 127.0.0.1:PORT LOGFILE")
		os.Exit(2)
	}
	logf := func(format string, args ...any) {
		if f, err := os.OpenFile(os.Args[2], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			fmt.Fprintf(f, "tcpfwd %d: "+format+"\n", append([]any{os.Getpid()}, args...)...)
			f.Close()
		}
	}
	c, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	// Plain reads and writes: QEMU hands over one socket of a socketpair
	// as stdin and stdout, which sendfile and splice do not take.
	in, out := struct{ io.Reader }{os.Stdin}, struct{ io.Writer }{os.Stdout}
	done := make(chan struct{}, 1)
	go func() {
		n, err := io.Copy(c, in)
		logf("guest to host: %d bytes, %v", n, err)
		c.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		n, err := io.Copy(out, c)
		logf("host to guest: %d bytes, %v", n, err)
		os.Exit(0) // the service closed: so does the guest's connection
	}()
	<-done
	select {} // until the service answers and closes
}
