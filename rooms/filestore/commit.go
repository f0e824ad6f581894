package filestore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// errClosed refuses writes after Close.
var errClosed = errors.New("chat store closed")

// committer writes the store's transactions from one goroutine: every write
// that arrives while a commit is under way joins the next one, so a burst of
// submits to many rooms costs one commit, and a lone submit waits for no
// timer. bbolt's DB.Batch groups writes too, but holds each for up to its
// MaxBatchDelay.
type committer struct {
	db   *bolt.DB
	wake chan struct{} // holds a value while the queue may be non-empty
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	queue  []*write
	closed bool

	commits, writes atomic.Int64
}

// write is one caller's part of a commit.
type write struct {
	fn  func(*bolt.Tx) error
	err chan error
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// do runs fn in a write transaction and returns once that transaction is
// committed to disk, or failed with nothing of fn kept. ctx can only stop
// fn before it is queued: once queued, the caller must learn its outcome.
func (c *committer) do(ctx context.Context, fn func(*bolt.Tx) error) error {
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
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // the committer will look at the queue anyway
	}
	return <-w.err
}

// run commits what has queued each time it is woken, and once more, for
// the last writes, when the store stops.
func (c *committer) run() {
	defer close(c.done)
	for {
		stopping := false
		select {
		case <-c.wake:
		case <-c.stop:
			stopping = true
		}
		c.commit(c.take())
		if stopping {
			return
		}
	}
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
