package relay

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// hangups learns that the clients of relayed streams left, or spoke, from
// one epoll set holding their sockets, beside the runtime's poller, and
// one goroutine waiting on it. A stream read by a goroutine of its own
// would hold that goroutine's stack for its life: most of an idle
// stream's memory, and more once the runtime, seeing deeper stacks
// elsewhere, starts new goroutines on larger ones. The kernel takes a
// socket out of the set when its connection is closed.
type hangups struct {
	epfd int
	wake [2]int // a pipe in the set: a byte written to it ends the wait

	mu      sync.Mutex
	streams map[uint64]*Stream // by token, as the set reports them
	last    uint64             // the token given last; 0 is the pipe's
	wg      sync.WaitGroup
}

// newHangups returns a running hangups, or nil, and streams are watched
// by goroutines of their own, where the system refuses a set.
func newHangups() *hangups {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	h := &hangups{epfd: epfd, streams: make(map[uint64]*Stream)}
	if err := unix.Pipe2(h.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(epfd)
		return nil
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, h.wake[0], &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		h.closeFDs()
		return nil
	}
	h.wg.Go(h.wait)
	return h
}

// add watches s's socket and reports true, or reports false when it
// cannot: s's connection has no descriptor of its own, or h is nil.
func (h *hangups) add(s *Stream) bool {
	if h == nil {
		return false
	}
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	h.mu.Lock()
	h.last++
	token := h.last
	h.streams[token] = s
	h.mu.Unlock()
	s.hangup.Store(token)
	// One report is all a stream needs: it ends on the first.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	var added error
	if err := raw.Control(func(fd uintptr) { added = unix.EpollCtl(h.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || added != nil {
		h.forget(token)
		s.hangup.Store(0)
		return false
	}
	return true
}

// forget stops reporting on the stream of token, which ended.
func (h *hangups) forget(token uint64) {
	h.mu.Lock()
	delete(h.streams, token)
	h.mu.Unlock()
}

// wait ends each stream whose client hung up or sent something (a client
// of an event stream has nothing more to say), until close.
func (h *hangups) wait() {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(h.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Not expected of a valid set; streams still end when a
			// write to their client fails, or a heartbeat does.
			return
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if token == 0 {
				return
			}
			h.mu.Lock()
			s := h.streams[token]
			h.mu.Unlock()
			if s != nil {
				s.end(ErrClientLeft)
			}
		}
	}
}

// close stops the wait and releases the set. The pool's streams are ended
// already.
func (h *hangups) close() {
	if h == nil {
		return
	}
	_, _ = unix.Write(h.wake[1], []byte{0})
	h.wg.Wait()
	h.closeFDs()
}

func (h *hangups) closeFDs() {
	for _, fd := range []int{h.epfd, h.wake[0], h.wake[1]} {
		if fd > 0 {
			unix.Close(fd)
		}
	}
}
