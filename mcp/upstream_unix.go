//go:build unix

package mcp

import (
	"errors"
	"net"
	"syscall"
)

// stillOpen reports whether an idle connection can carry another request:
// the upstream has neither closed it nor sent anything unasked. One
// non-blocking peek, on the calling goroutine.
func stillOpen(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is the only healthy state: EOF, an error, or
		// unasked bytes all retire the connection.
		open = errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK)
		return true // never wait for readiness
	})
	return err == nil && open
}
