package testenv

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// tcpfwd as QEMU's guestfwd runs it: the connection is its stdin and
// stdout. A large request through it arrives whole, and its answer comes
// back.
func TestTCPFwd(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tcpfwd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/pglogship/pglogship/internal/testenv/tcpfwd").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	go func() {
		for {
			c, err := front.Accept()
			if err != nil {
				return
			}
			f, err := c.(*net.TCPConn).File()
			c.Close()
			if err != nil {
				return
			}
			cmd := exec.Command(bin, ln.Addr().String(), filepath.Join(t.TempDir(), "log"))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, os.Stderr
			_ = cmd.Start()
			f.Close()
			go cmd.Wait()
		}
	}()
	body := bytes.Repeat([]byte("x"), 8<<20)
	req, err := http.NewRequest(http.MethodPut, "http://"+front.Addr().String()+"/o", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || got != int64(len(body)) {
		t.Fatalf("status %d, %d of %d bytes arrived", resp.StatusCode, got, len(body))
	}
}
