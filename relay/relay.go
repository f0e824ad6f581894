// Package relay writes event streams to connections taken over from net/http
// (hijacked), with a few writer goroutines shared by every stream instead of
// a goroutine and its stack parked in the request path for each.
//
// A stream is woken when its source has frames; a writer then takes all of
// them and writes them with one vectored write. A shared writer never waits
// on a client: it writes only what the socket takes at once, and the moment
// a socket is full, the stream gets a goroutine of its own until it has
// caught up. So a stream whose client reads nothing costs the shared
// writers one system call, and delays no other. A client that leaves is
// noticed at once, not at the next write: on Linux, one epoll set holds the
// sockets of every stream over plain TCP, and one goroutine waits on it, so
// that an idle stream holds no goroutine at all; elsewhere, and over TLS,
// each stream has a small goroutine blocked reading its connection.
//
// A TLS stream cannot be written that way: crypto/tls has no write that
// stops when the socket is full, and breaks a connection for good when a
// write times out. Each of its write bursts runs in a goroutine of its own
// instead, which lives only while it writes; so does each burst of a
// connection without a socket of its own (wrapped by a listener), and of
// every stream on systems other than Linux, where the relay has no such
// write.
package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Source is what a stream relays: its queued frames, then why it ended.
type Source interface {
	// Take appends the queued frames to dst. A non-nil error ends the
	// stream after the frames returned with it are written.
	Take(dst [][]byte) ([][]byte, error)
}

// Config sets a Pool's timing.
type Config struct {
	Writers      int           // shared writer goroutines; at least 1
	Heartbeat    time.Duration // Ping is written to a stream idle this long; 0 = none
	Ping         []byte        // the heartbeat, in the streams' protocol
	WriteTimeout time.Duration // a stream whose client takes no data this long is closed
}

// Why a stream ended, besides a write error or its Source's error.
var (
	ErrClientLeft = errors.New("client left")
	ErrPoolClosed = errors.New("relay closed")
)

// Ended tells how a stream ended.
type Ended struct {
	Written int64 // bytes written to the connection
	// Why it ended: ErrClientLeft, ErrPoolClosed, the error of a write, or
	// the error its Source returned.
	Err error
}

// heartbeatChecks is how many times per heartbeat interval idle streams are
// looked for: a stream is pinged at most this fraction of the interval late.
const heartbeatChecks = 20

// A socket is a connection's socket, written by the shared writers.
type socket interface {
	// writeNow writes what the socket takes of bufs at once, consuming
	// it; it never waits for room.
	writeNow(bufs *net.Buffers) (int64, error)
}

// Pool relays many streams. Its methods are safe for concurrent use.
type Pool struct {
	cfg   Config
	epoch time.Time // lastWrite times are counted from here

	mu      sync.Mutex
	ready   []*Stream // streams with work, oldest first
	streams map[*Stream]struct{}
	closed  bool
	signal  chan struct{} // wakes a writer when ready grows

	hangups *hangups // nil: each stream's client is watched by a goroutine of its own
	done    chan struct{}
	wg      sync.WaitGroup
}

// New starts a Pool's writers. Close stops them.
func New(cfg Config) *Pool {
	p := &Pool{
		cfg:     cfg,
		epoch:   time.Now(),
		streams: make(map[*Stream]struct{}),
		signal:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		hangups: newHangups(),
	}
	for range max(cfg.Writers, 1) {
		p.wg.Go(p.writer)
	}
	if cfg.Heartbeat > 0 {
		p.wg.Go(p.heartbeats)
	}
	return p
}

// Stream is one relayed event stream.
type Stream struct {
	pool  *Pool
	conn  net.Conn
	tls   bool   // written in records, without short deadlines
	sock  socket // what the shared writers write to; nil: goroutines of its own write
	src   Source
	onEnd func(Ended)

	// wakes counts wake-ups not yet served. Only its rise from zero
	// queues the stream, so exactly one goroutine serves a stream at a
	// time. It starts at one, a hold that Attach releases.
	wakes     atomic.Int64
	ping      atomic.Bool  // a heartbeat is due
	lastWrite atomic.Int64 // when the stream was last written, since pool.epoch
	written   atomic.Int64
	hangup    atomic.Uint64 // its token in the pool's hangups; 0: a goroutine watches
	frames    [][]byte      // reused by the serving goroutine
	endOnce   sync.Once
}

// NewStream returns a stream that is not yet attached to a connection. Give
// its Wake to the source first, then Attach it: wake-ups that come before
// Attach are kept.
func (p *Pool) NewStream() *Stream {
	s := &Stream{pool: p}
	s.wakes.Store(1)
	return s
}

// Wake tells the stream that its source has frames or has ended. It never
// blocks.
func (s *Stream) Wake() {
	if s.wakes.Add(1) == 1 {
		s.pool.enqueue(s)
	}
}

// Attach starts relaying src to conn, whose response head and start the
// caller has already written. onEnd runs once when the stream ends, for
// whatever reason, after conn is closed. Attach to a closed pool closes conn
// at once.
func (s *Stream) Attach(conn net.Conn, src Source, onEnd func(Ended)) {
	_, isTLS := conn.(*tls.Conn)
	s.conn, s.tls, s.src, s.onEnd = conn, isTLS, src, onEnd
	if !isTLS {
		s.sock = socketOf(conn)
	}
	// A write deadline left by the server the connection came from would
	// fail the shared writers, which set none.
	_ = conn.SetWriteDeadline(time.Time{})
	s.lastWrite.Store(int64(time.Since(s.pool.epoch)))
	p := s.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.end(ErrPoolClosed)
		return
	}
	p.streams[s] = struct{}{}
	p.mu.Unlock()
	// Over TLS, records the client sends (a key update, say) are not its
	// leaving: only a read through TLS tells.
	if s.tls || !p.hangups.add(s) {
		go s.watch()
	}
	// Release the hold; wake-ups that came meanwhile are served now.
	if s.wakes.Add(-1) > 0 {
		s.pool.enqueue(s)
	}
}

// watch ends the stream when the client closes its side, or sends anything:
// a client of an event stream has nothing more to say. A read deadline left
// on the connection by the server it came from is not the client leaving.
func (s *Stream) watch() {
	var b [1]byte
	for {
		_, err := s.conn.Read(b[:])
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && s.conn.SetReadDeadline(time.Time{}) == nil {
			continue
		}
		s.end(ErrClientLeft)
		return
	}
}

// end closes the connection and releases the stream, once; the first cause
// is the one reported.
func (s *Stream) end(cause error) {
	s.endOnce.Do(func() {
		if s.conn != nil {
			closeConn(s.conn)
		}
		p := s.pool
		p.mu.Lock()
		delete(p.streams, s)
		p.mu.Unlock()
		if token := s.hangup.Load(); token != 0 {
			p.hangups.forget(token)
		}
		if s.onEnd != nil {
			s.onEnd(Ended{Written: s.written.Load(), Err: cause})
		}
	})
}

// closeConn closes c at once. A TLS connection is closed beneath TLS:
// sending close_notify would wait up to 5 s on a client whose socket is
// full, and an event stream needs no close_notify, since every event is
// delimited and a cut one is discarded.
func closeConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_ = c.Close()
}

func (p *Pool) enqueue(s *Stream) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.ready = append(p.ready, s)
	p.mu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// next returns a stream with work, or nil when the pool is closed.
func (p *Pool) next() *Stream {
	for {
		p.mu.Lock()
		if len(p.ready) > 0 {
			s := p.ready[0]
			p.ready[0] = nil
			p.ready = p.ready[1:]
			more := len(p.ready) > 0
			p.mu.Unlock()
			if more {
				select { // pass the baton: another writer can take the rest
				case p.signal <- struct{}{}:
				default:
				}
			}
			return s
		}
		p.mu.Unlock()
		select {
		case <-p.signal:
		case <-p.done:
			return nil
		}
	}
}

// writer serves the streams with work. A stream it cannot write without
// waiting it hands a goroutine of its own, which may wait on the client up
// to the write timeout.
func (p *Pool) writer() {
	for s := p.next(); s != nil; s = p.next() {
		if s.sock == nil {
			go s.serve(false)
		} else {
			s.serve(true)
		}
	}
}

// serve writes what the stream's source has, until no wake-up is left. On a
// shared writer it writes only what the socket takes at once: the moment the
// socket is full, the stream goes on in a goroutine of its own.
func (s *Stream) serve(shared bool) {
	for {
		seen := s.wakes.Load()
		rest, err := s.writeQueued(shared)
		if rest != nil {
			go s.finish(rest, err)
			return
		}
		if err != nil {
			s.end(err)
			return
		}
		if s.wakes.Add(-seen) == 0 {
			return
		}
	}
}

// finish writes what a shared writer could not, waiting on the client, then
// ends the stream with then, when its source had ended, or else serves it
// until it has caught up.
func (s *Stream) finish(rest net.Buffers, then error) {
	if err := s.write(&rest); err != nil {
		s.end(err)
		return
	}
	if then != nil {
		s.end(then)
		return
	}
	s.serve(false)
}

// writeQueued writes the queued frames (and a due heartbeat). On a shared
// writer, it returns the rest the socket did not take, with the source's
// error if it had ended (the rest, a close event perhaps, is still owed);
// and an error when the stream must end.
func (s *Stream) writeQueued(shared bool) (net.Buffers, error) {
	frames, srcErr := s.src.Take(s.frames[:0])
	if s.ping.Swap(false) && len(frames) == 0 {
		frames = append(frames, s.pool.cfg.Ping)
	}
	defer func() {
		clear(frames) // drop the shared frames while idle
		s.frames = frames[:0]
	}()
	bufs := net.Buffers(frames)
	if !shared {
		if err := s.write(&bufs); err != nil {
			return nil, err
		}
		return nil, srcErr
	}
	if len(bufs) == 0 {
		return nil, srcErr
	}
	n, err := s.sock.writeNow(&bufs)
	s.wrote(n)
	if err != nil {
		return nil, err
	}
	if len(bufs) > 0 {
		return append(net.Buffers(nil), bufs...), srcErr
	}
	return nil, srcErr
}

// write writes bufs, consuming them, waiting on the client. It fails only
// when the client takes nothing for the write timeout: a client that reads
// slowly is ended by falling behind its source (evicted), not by the time a
// large burst takes. A TLS connection gets a deadline per write of at most a
// record's worth, as a write that times out breaks it for good; small frames
// are gathered into one write, since crypto/tls makes a record and a system
// call of each.
func (s *Stream) write(bufs *net.Buffers) error {
	timeout := s.pool.cfg.WriteTimeout
	if s.tls {
		gather := gatherBuffers.Get().(*[]byte)
		defer gatherBuffers.Put(gather)
		for len(*bufs) > 0 {
			b := (*gather)[:0]
			for len(*bufs) > 0 && len(b)+len((*bufs)[0]) <= cap(b) {
				b = append(b, (*bufs)[0]...)
				*bufs = (*bufs)[1:]
			}
			if len(b) == 0 { // a frame larger than a record goes alone
				b = (*bufs)[0]
				*bufs = (*bufs)[1:]
			}
			_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
			n, err := s.conn.Write(b)
			s.wrote(int64(n))
			if err != nil {
				return err
			}
		}
		return nil
	}
	for len(*bufs) > 0 {
		_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
		n, err := bufs.WriteTo(s.conn)
		s.wrote(n)
		if err != nil && (n == 0 || !isTimeout(err)) {
			return err
		}
	}
	if s.sock != nil {
		// The shared writers write next, and they fail on a deadline passed.
		return s.conn.SetWriteDeadline(time.Time{})
	}
	return nil
}

// gatherBuffers hold the frames of one TLS write: a record's worth.
var gatherBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wrote counts n bytes written; any progress counts as a write for the
// heartbeat.
func (s *Stream) wrote(n int64) {
	if n > 0 {
		s.written.Add(n)
		s.lastWrite.Store(int64(time.Since(s.pool.epoch)))
	}
}

// heartbeats pings the streams nothing was written to for a heartbeat
// interval. It looks heartbeatChecks times per interval, so that a stream's
// ping is never more than that fraction late, while a busy stream, whose
// writes only store a time, costs nothing more.
func (p *Pool) heartbeats() {
	// A tick under a millisecond would only burn CPU (and NewTicker refuses
	// 0, which a nanosecond heartbeat would give).
	tick := time.NewTicker(max(p.cfg.Heartbeat/heartbeatChecks, time.Millisecond))
	defer tick.Stop()
	var due []*Stream
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		idleSince := int64(time.Since(p.epoch) - p.cfg.Heartbeat)
		p.mu.Lock()
		for s := range p.streams {
			if s.lastWrite.Load() <= idleSince && !s.ping.Load() {
				due = append(due, s)
			}
		}
		p.mu.Unlock()
		for i, s := range due {
			s.ping.Store(true)
			s.Wake()
			due[i] = nil
		}
		due = due[:0]
	}
}

// Len returns the number of attached streams.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.streams)
}

// Close ends every stream, closing its connection, and stops the writers.
// Streams attached later are closed at once. No stream can hold it up: a
// connection is closed without waiting on its client, and the streams are
// ended by as many goroutines as there are CPUs.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	streams := make([]*Stream, 0, len(p.streams))
	for s := range p.streams {
		streams = append(streams, s)
	}
	p.mu.Unlock()
	close(p.done)
	var wg sync.WaitGroup
	parts := runtime.GOMAXPROCS(0)
	for i := range parts {
		wg.Go(func() {
			for _, s := range streams[i*len(streams)/parts : (i+1)*len(streams)/parts] {
				s.end(ErrPoolClosed)
			}
		})
	}
	wg.Wait()
	p.wg.Wait()
	p.hangups.close()
}
