package relay

import (
	"cmp"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawSocket is a connection's socket, written with writev on the
// non-blocking descriptor the runtime's poller already holds.
type rawSocket struct{ raw syscall.RawConn }

// socketOf returns conn's socket, or nil when conn has no descriptor of its
// own (one wrapped by a listener, say).
func socketOf(conn net.Conn) socket {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rawSocket{raw}
}

// writeNow writes what the socket takes of bufs at once, consuming it. It
// stops at the first short write: the socket is full, and waiting for room is
// for a goroutine of the stream's own.
func (s rawSocket) writeNow(bufs *net.Buffers) (int64, error) {
	a := attempts.Get().(*attempt)
	defer attempts.Put(a)
	a.bufs, a.written, a.err = bufs, 0, nil
	err := s.raw.Write(a.write)
	a.bufs = nil
	return a.written, cmp.Or(err, a.err)
}

// An attempt is the state of one writeNow, reused, as the function given
// to the socket would escape if made per write.
type attempt struct {
	bufs    *net.Buffers
	iovecs  []syscall.Iovec
	written int64
	err     error
	write   func(fd uintptr) bool // a.writev, bound once
}

var attempts = sync.Pool{New: func() any {
	a := new(attempt)
	a.write = a.writev
	return a
}}

// maxIovecs is the most buffers one writev takes (IOV_MAX).
const maxIovecs = 1024

// writev writes a.bufs to fd until a write is short. It always returns
// true, done: the poller is never to wait for room.
func (a *attempt) writev(fd uintptr) bool {
	for len(*a.bufs) > 0 {
		size := 0
		for _, b := range (*a.bufs)[:min(len(*a.bufs), maxIovecs)] {
			if len(b) > 0 {
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				a.iovecs = append(a.iovecs, v)
				size += len(b)
			}
		}
		var n uintptr
		var errno syscall.Errno
		if size > 0 {
			n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&a.iovecs[0])), uintptr(len(a.iovecs)))
		}
		clear(a.iovecs) // hold no frame while pooled
		a.iovecs = a.iovecs[:0]
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return true
		default:
			a.err = os.NewSyscallError("writev", errno)
			return true
		}
		a.written += int64(n)
		consume(a.bufs, int(n))
		if int(n) < size {
			return true
		}
	}
	return true
}

// consume drops the first n bytes of bufs, and the empty buffers after them.
func consume(bufs *net.Buffers, n int) {
	for len(*bufs) > 0 && n >= len((*bufs)[0]) {
		n -= len((*bufs)[0])
		*bufs = (*bufs)[1:]
	}
	if n > 0 {
		(*bufs)[0] = (*bufs)[0][n:]
	}
}
