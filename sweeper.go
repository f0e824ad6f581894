package chat

import (
	"sync"
	"time"
)

// sweepsPerInterval is how many times per heartbeat interval, and per write
// timeout, the sweeper looks over the streams: a heartbeat is at most this
// fraction of its interval late, and a stuck write fails at most this
// fraction of the write timeout late. It mirrors the relay's heartbeats
// (relay.heartbeatChecks), which do the same for streams taken over.
const sweepsPerInterval = 20

// sweeper keeps time for every stream written in the request path (SSE over
// HTTP/2 and HTTP/3, and gRPC), from one goroutine per app: it wakes a
// stream idle for the heartbeat interval with its heartbeat due, and fails
// a write under way for longer than the write timeout. Two timers per
// stream did this before; at 15,000 streams they fired 2,500 times a
// second, each a goroutine and often a woken thread. A stream's writes only
// store times, atomically (see streamWriter.within), which the sweeper
// reads without taking a lock of the stream's.
type sweeper struct {
	heartbeat time.Duration

	// streams is a slice, each stream knowing its index, not a set: a
	// sweep reads every stream, and a map's iteration was most of its cost.
	mu      sync.Mutex
	streams []*streamWriter

	done    chan struct{}
	stopped chan struct{}
}

// newSweeper starts the sweeper of an app whose idle streams get a
// heartbeat every heartbeat. stop stops it.
func newSweeper(heartbeat time.Duration) *sweeper {
	s := &sweeper{
		heartbeat: heartbeat,
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	go s.run()
	return s
}

// add has sw swept until remove.
func (s *sweeper) add(sw *streamWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sw.swept >= 0 {
		return // already swept: a second entry would outlive remove
	}
	sw.swept = len(s.streams)
	s.streams = append(s.streams, sw)
}

// remove stops sweeping sw. A sweep that has already picked sw may still
// act on it: a heartbeat due wakes a loop that is gone, and failing a write
// does nothing where none is under way.
func (s *sweeper) remove(sw *streamWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sw.swept // add keeps it the stream's index while it is swept
	if i < 0 {
		return
	}
	last := len(s.streams) - 1
	s.streams[i] = s.streams[last]
	s.streams[i].swept = i
	s.streams[last] = nil
	s.streams = s.streams[:last]
	sw.swept = -1
}

// stop stops the sweeper and waits for it.
func (s *sweeper) stop() {
	close(s.done)
	<-s.stopped
}

// run sweeps sweepsPerInterval times per heartbeat interval or write
// timeout, whichever is shorter.
func (s *sweeper) run() {
	defer close(s.stopped)
	// A tick under a millisecond would only burn CPU (and NewTicker refuses
	// 0, which a nanosecond heartbeat would give).
	tick := time.NewTicker(max(min(s.heartbeat, writeTimeout)/sweepsPerInterval, time.Millisecond))
	defer tick.Stop()
	var due, overdue []*streamWriter
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		due, overdue = s.sweep(streamClock(), due[:0], overdue[:0])
		for i, sw := range due {
			sw.beat.Store(true)
			sw.wake()
			due[i] = nil
		}
		for i, sw := range overdue {
			// fail waits for the write to return: not here, where it
			// would hold up every other stream's time.
			if sw.failing.CompareAndSwap(false, true) {
				go func() {
					sw.fail(true)
					sw.failing.Store(false)
				}()
			}
			overdue[i] = nil
		}
	}
}

// sweep appends to due the streams whose heartbeat is due at now, idle for
// the interval with none due yet, and to overdue those whose write under
// way has taken the write timeout. It only reads each stream's times.
func (s *sweeper) sweep(now int64, due, overdue []*streamWriter) ([]*streamWriter, []*streamWriter) {
	idleSince, startedBy := now-int64(s.heartbeat), now-int64(writeTimeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sw := range s.streams {
		switch start := sw.writeStart.Load(); {
		case start != 0:
			if start <= startedBy && !sw.failing.Load() {
				overdue = append(overdue, sw)
			}
		case sw.wake != nil && sw.lastWrite.Load() <= idleSince && !sw.beat.Load():
			due = append(due, sw)
		}
	}
	return due, overdue
}

// clockEpoch starts the clock of streamClock.
var clockEpoch = time.Now()

// streamClock is the monotonic time in nanoseconds, as a stream's writes
// store it for the sweeper: an integer that an atomic holds. It is never 0,
// which stands for no time.
func streamClock() int64 {
	return int64(time.Since(clockEpoch)) + 1
}
