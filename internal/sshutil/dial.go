// Package sshutil holds what the SSH-based packages (repository/sftp,
// guest/ssh) share.
package sshutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
)

// Dial connects to addr and completes the SSH handshake, honouring ctx and
// timeout during both. cfg.HostKeyCallback must be set: host keys are
// always verified.
func Dial(ctx context.Context, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	return DialVia(ctx, nil, addr, cfg, timeout)
}

// DialFunc opens a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// DialVia is Dial over a connection that dial opens (nil: a direct TCP
// connection), for example one forwarded by another SSH server.
func DialVia(ctx context.Context, dial DialFunc, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	if cfg.HostKeyCallback == nil {
		return nil, errors.New("ssh: HostKeyCallback is required (host keys are always verified)")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := *cfg
	c.Timeout = timeout
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, &c)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, `'\''`...)
			continue
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
