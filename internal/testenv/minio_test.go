package testenv

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// MinIO answers on 127.0.0.1, no socket of its process listens anywhere
// but loopback, it refuses anonymous requests and serves its root user.
// (MinIO always adds a listener on every loopback address, ::1 too, "for
// the console"; that is hard-coded and stays on the machine.)
func TestMinIO(t *testing.T) {
	SkipIfShort(t)
	t.Parallel()
	m := StartMinIO(t)
	_, port, err := net.SplitHostPort(m.Endpoint)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	assert.Contains(t, listeningAddrs(t, p), "127.0.0.1")
	listeners := processListeners(t, m.PID)
	require.NotEmpty(t, listeners)
	for _, a := range listeners {
		assert.True(t, net.ParseIP(a).IsLoopback(), "listening on %s: every socket of the server is on loopback", a)
	}

	resp, err := http.Get("http://" + m.Endpoint + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "anonymous requests are refused")

	bucket := m.NewBucket(t)
	c := m.Client(t)
	_, err = c.PutObject(context.Background(), bucket, "k", strings.NewReader("v"), 1, minio.PutObjectOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"k"}, m.Keys(t, bucket))
	assert.Empty(t, m.IncompleteUploads(t))
	assert.True(t, strings.HasPrefix(MinIOBinary(t), filepath.Join(CacheDir(), "bin", "minio-")), "cached")
}

// processListeners returns the addresses of the listening TCP sockets
// that process pid holds.
func processListeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	require.NoError(t, err)
	for _, fd := range fds {
		link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var addrs []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, portHex, _ := strings.Cut(fields[1], ":")
			port, err := strconv.ParseUint(portHex, 16, 16)
			require.NoError(t, err)
			addrs = append(addrs, listeningAddrs(t, int(port))...)
		}
	}
	return addrs
}
