// Package relay writes event streams to connections taken over from net/http
// (hijacked), with a few writer goroutines shared by every stream instead of
// a goroutine and its stack parked in the request path for each.
//
// A stream is woken when its source has frames; a writer then takes all of
// them and writes them with one vectored write. A stream whose client does
// not read fast enough to take a write at once gets a goroutine of its own
// until it has caught up, so it never holds up the shared writers. Each
// stream also has a small goroutine blocked reading its connection, so that a
// client that leaves is noticed at once, not at the next write.
package relay

import (
	"errors"
	"net"
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
	Heartbeat    time.Duration // a comment on a stream idle this long; 0 = none
	WriteTimeout time.Duration // a stream whose client takes no data this long is closed
	// QuickWrite is how long a shared writer waits on one stream before it
	// hands the stream a goroutine of its own.
	QuickWrite time.Duration
}

// heartbeatFrame is the comment sent on idle streams.
var heartbeatFrame = []byte(": ping\n\n")

// Pool relays many streams. Its methods are safe for concurrent use.
type Pool struct {
	cfg Config

	mu      sync.Mutex
	ready   []*Stream // streams with work, oldest first
	streams map[*Stream]struct{}
	closed  bool
	signal  chan struct{} // wakes a writer when ready grows

	done chan struct{}
	wg   sync.WaitGroup
}

// New starts a Pool's writers. Close stops them.
func New(cfg Config) *Pool {
	p := &Pool{
		cfg:     cfg,
		streams: make(map[*Stream]struct{}),
		signal:  make(chan struct{}, 1),
		done:    make(chan struct{}),
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
	src   Source
	onEnd func()

	// wakes counts wake-ups not yet served. Only its rise from zero queues
	// the stream, so exactly one goroutine serves a stream at a time. It
	// starts at one, a hold that Attach releases.
	wakes   atomic.Int64
	ping    atomic.Bool // a heartbeat is due
	active  atomic.Bool // written since the last heartbeat tick
	frames  [][]byte    // reused by the serving goroutine
	endOnce sync.Once
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

// Attach starts relaying src to conn, whose response head the caller has
// already written. onEnd runs once when the stream ends, for whatever reason,
// after conn is closed. Attach to a closed pool closes conn at once.
func (s *Stream) Attach(conn net.Conn, src Source, onEnd func()) {
	s.conn, s.src, s.onEnd = conn, src, onEnd
	p := s.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.end()
		return
	}
	p.streams[s] = struct{}{}
	p.mu.Unlock()
	go s.watch()
	// Release the hold; wake-ups that came meanwhile are served now.
	if s.wakes.Add(-1) > 0 {
		p.enqueue(s)
	}
}

// watch ends the stream when the client closes its side, or sends anything:
// a client of an event stream has nothing more to say.
func (s *Stream) watch() {
	var b [1]byte
	_, _ = s.conn.Read(b[:])
	s.end()
}

// end closes the connection and releases the stream, once.
func (s *Stream) end() {
	s.endOnce.Do(func() {
		if s.conn != nil {
			_ = s.conn.Close()
		}
		p := s.pool
		p.mu.Lock()
		delete(p.streams, s)
		p.mu.Unlock()
		if s.onEnd != nil {
			s.onEnd()
		}
	})
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

func (p *Pool) writer() {
	for s := p.next(); s != nil; s = p.next() {
		s.serve(p.cfg.QuickWrite)
	}
}

// serve writes what the stream's source has, until no wake-up is left. If
// the client is slow to take a write, it goes on in a goroutine of its own,
// with the full write timeout.
func (s *Stream) serve(timeout time.Duration) {
	for {
		seen := s.wakes.Load()
		more, err := s.writeQueued(timeout)
		if err != nil {
			s.end()
			return
		}
		if more != nil {
			// The client is slow: finish in a goroutine of its own.
			go s.serveSlow(more)
			return
		}
		if s.wakes.Add(-seen) == 0 {
			return
		}
	}
}

// serveSlow finishes a write a shared writer could not, then serves the
// stream until it has caught up.
func (s *Stream) serveSlow(rest net.Buffers) {
	timeout := s.pool.cfg.WriteTimeout
	_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := rest.WriteTo(s.conn); err != nil {
		s.end()
		return
	}
	s.serve(timeout)
}

// writeQueued writes the queued frames (and a due heartbeat). It returns the
// unwritten rest when the write timed out part way, and an error when the
// stream must end.
func (s *Stream) writeQueued(timeout time.Duration) (net.Buffers, error) {
	frames, srcErr := s.src.Take(s.frames[:0])
	if s.ping.Swap(false) && len(frames) == 0 {
		frames = append(frames, heartbeatFrame)
	}
	defer func() {
		clear(frames) // drop the shared frames while idle
		s.frames = frames[:0]
	}()
	if len(frames) > 0 {
		s.active.Store(true)
		_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
		bufs := net.Buffers(frames)
		if _, err := bufs.WriteTo(s.conn); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && srcErr == nil && timeout < s.pool.cfg.WriteTimeout {
				return append(net.Buffers(nil), bufs...), nil
			}
			return nil, err
		}
	}
	return nil, srcErr
}

// heartbeats marks streams that wrote nothing since the last tick.
func (p *Pool) heartbeats() {
	tick := time.NewTicker(p.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		var due []*Stream
		for s := range p.streams {
			if !s.active.Swap(false) {
				due = append(due, s)
			}
		}
		p.mu.Unlock()
		for _, s := range due {
			s.ping.Store(true)
			s.Wake()
		}
	}
}

// Len returns the number of attached streams.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.streams)
}

// Close ends every stream, closing its connection, and stops the writers.
// Streams attached later are closed at once.
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
	for _, s := range streams {
		s.end()
	}
	p.wg.Wait()
}
