package filestore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errClosed refuses writes after Close.
var errClosed = errors.New("chat store closed")

// committer writes the store's transactions from one goroutine: every write
// that arrives while a commit is under way joins the next one, so a burst of
// submits to many rooms costs one commit. A room has one write in flight at
// a time (its next messages queue in the room), so company for a commit can
// only come from other rooms: when a lone write finds other rooms writing,
// its commit waits up to hold for one of theirs; a lone room, however fast
// it posts, waits for no timer. bbolt's DB.Batch groups writes too, but
// holds every write for up to its MaxBatchDelay.
type committer struct {
	db    *bolt.DB
	wake  chan struct{} // holds a value while the queue may be non-empty
	stop  chan struct{}
	done  chan struct{}
	hold  time.Duration // the constant hold, but in tests
	timer *time.Timer   // the hold's, used by run only

	mu     sync.Mutex
	queue  []*write
	closed bool
	room   string    // the newest write's
	wrote  time.Time // when the newest write came
	others time.Time // when another room than room last wrote

	commits, writes atomic.Int64
}

// hold is the longest a lone write waits for another room's to share its
// commit, when other rooms write: a commit is two fdatasyncs, which cost
// this process about 0.5 ms of CPU each time (BENCHMARKS.md, "The file
// store"), against at most hold more before a submit is answered.
const hold = 2 * time.Millisecond

// company is how recently, in holds, another room must have written for a
// hold to be worth it: at that rate or faster, another room's write often
// comes within the hold.
const company = 10

// write is one caller's part of a commit.
type write struct {
	fn  func(*bolt.Tx) error
	err chan error
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), hold: hold, timer: time.NewTimer(hold)}
	c.timer.Stop()
	go c.run()
	return c
}

// do runs fn, a write of room's, in a write transaction and returns once
// that transaction is committed to disk, or failed with nothing of fn kept.
// ctx can only stop fn before it is queued: once queued, the caller must
// learn its outcome.
func (c *committer) do(ctx context.Context, room string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &write{fn: fn, err: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed
	}
	c.queue = append(c.queue, w)
	if room != c.room {
		c.room, c.others = room, c.wrote
	}
	c.wrote = time.Now()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // the committer will look at the queue anyway
	}
	return <-w.err
}

func (c *committer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
		case <-c.stop:
			c.commit(c.take())
			return
		}
		if c.alone() {
			c.timer.Reset(c.hold)
			select {
			case <-c.wake:
			case <-c.timer.C:
			case <-c.stop:
			}
			c.timer.Stop()
		}
		c.commit(c.take())
	}
}

// alone reports whether the queue holds one write while other rooms write,
// the case where holding its commit may save one.
func (c *committer) alone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) == 1 && time.Since(c.others) < company*c.hold
}

// take empties the queue.
func (c *committer) take() []*write {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.queue
	c.queue = nil
	return ws
}

// commit writes ws in one transaction. When one of them fails, the
// transaction is rolled back and each is retried alone, so that one
// failure does not fail the others and nothing is kept half-way.
func (c *committer) commit(ws []*write) {
	if len(ws) == 0 {
		return
	}
	c.commits.Add(1)
	c.writes.Add(int64(len(ws)))
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, w := range ws {
			if err := w.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(ws) > 1 {
		for _, w := range ws {
			c.commits.Add(1)
			w.err <- c.db.Update(w.fn)
		}
		return
	}
	for _, w := range ws {
		w.err <- err
	}
}

// close commits what is queued and refuses writes from then on.
func (c *committer) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
}

func (c *committer) stats() Stats {
	return Stats{Commits: c.commits.Load(), Writes: c.writes.Load()}
}
