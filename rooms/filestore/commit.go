package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// errClosed refuses writes after Close.
var errClosed = errors.New("chat store closed")

// committer writes the store's transactions from one goroutine: every write
// that arrives while a commit is under way joins the next one, so a burst of
// submits to many rooms costs one commit, and a lone submit waits for no
// timer. bbolt's DB.Batch groups writes too, but holds each for up to its
// MaxBatchDelay.
//
// It owns the file: after a commit that erased text it compacts the file
// into a new one that takes the old one's place (see compact), at most once
// every CompactEvery, so that a run of deletes costs one copy and holds up
// the commits of every room once; the store's readers reach the file
// through view, which that swap waits for.
type committer struct {
	path string
	// swap guards db: held to read by view, and to write by the swap.
	swap sync.RWMutex
	db   *bolt.DB
	wake chan struct{} // holds a value while the queue may be non-empty
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	queue  []*write
	closed bool

	// erased is set while text that a commit erased may remain in the
	// file's free pages, until the next compaction; compacted is when
	// the last one ran. Both are run's.
	erased    bool
	compacted time.Time
	// failed reports a compaction that failed; erased text stays on the
	// disk until the next one succeeds.
	failed atomic.Pointer[func(error)]

	commits, writes, compactions atomic.Int64
}

// CompactEvery is the longest a text a delete erased stays in the file's
// free pages: deletes within it share one compaction.
const CompactEvery = 5 * time.Second

// write is one caller's part of a commit.
type write struct {
	fn  func(*bolt.Tx) error
	err chan error
	// erases is set when fn erases text that must leave the disk,
	// within CompactEvery.
	erases bool
}

// newCommitter starts the committer of db, the file at path; with erased,
// a delete's text waits in the file for its compaction, which it runs at
// once.
func newCommitter(db *bolt.DB, path string, erased bool) *committer {
	c := &committer{db: db, path: path, erased: erased, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// do runs fn in a write transaction and returns once that transaction is
// committed to disk, or failed with nothing of fn kept. ctx can only stop
// fn before it is queued: once queued, the caller must learn its outcome.
// With erases, the file is compacted within CompactEvery of the commit.
func (c *committer) do(ctx context.Context, erases bool, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &write{fn: fn, err: make(chan error, 1), erases: erases}
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
// the last writes, when the store stops; it compacts the file once
// CompactEvery has passed since the last compaction, or at the stop, while
// a commit erased text.
func (c *committer) run() {
	defer close(c.done)
	var due <-chan time.Time // while erased text waits for its compaction
	if c.erased {
		due = time.After(0)
	}
	for {
		stopping := false
		select {
		case <-c.wake:
		case <-due:
			due = nil
		case <-c.stop:
			stopping = true
		}
		c.commit(c.take())
		if c.erased && (stopping || time.Since(c.compacted) >= CompactEvery) {
			c.compactErased()
		}
		if stopping {
			return
		}
		if c.erased && due == nil {
			due = time.After(CompactEvery - time.Since(c.compacted))
		}
	}
}

// compactErased compacts the file, which erased text waits for, and
// reports a failure: the writes are stored, and the next try is
// CompactEvery later.
func (c *committer) compactErased() {
	c.compacted = time.Now()
	c.compactions.Add(1)
	err := c.compact()
	if err == nil {
		// The copy erased the text: the marker goes, in a commit of its
		// own, which leaves nothing of it behind.
		err = c.db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(erasingBucket); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
			return nil
		})
	}
	if err == nil {
		c.erased = false
		return
	}
	if report := c.failed.Load(); report != nil {
		(*report)(err)
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
	// Only this goroutine swaps db: it reads it without the lock.
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, w := range ws {
			if err := w.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	errs := make([]error, len(ws))
	if err != nil && len(ws) > 1 {
		for i, w := range ws {
			c.commits.Add(1)
			errs[i] = c.db.Update(w.fn)
		}
	} else {
		for i := range errs {
			errs[i] = err
		}
	}
	for i, w := range ws {
		if w.erases && errs[i] == nil {
			c.erased = true
		}
		w.err <- errs[i]
	}
}

// compact copies the file's live data into a new file, which takes the
// old one's place: bbolt reuses the pages a commit frees but leaves their
// bytes as they were, so only a copy leaves nothing of an erased text on
// disk. Readers wait for the swap; writes are this goroutine's.
func (c *committer) compact() error {
	tmp := c.path + ".compact"
	_ = os.Remove(tmp) // left by a compaction that stopped half-way
	dst, err := openDB(tmp)
	if err != nil {
		return fmt.Errorf("compacting: %w", err)
	}
	if err := bolt.Compact(dst, c.db, 0); err != nil {
		return errors.Join(fmt.Errorf("compacting: %w", err), dst.Close(), os.Remove(tmp))
	}
	if err := dst.Sync(); err != nil {
		return errors.Join(fmt.Errorf("compacting: %w", err), dst.Close(), os.Remove(tmp))
	}
	if err := dst.Close(); err != nil {
		return errors.Join(fmt.Errorf("compacting: %w", err), os.Remove(tmp))
	}
	c.swap.Lock()
	defer c.swap.Unlock()
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("compacting: closing the old file: %w", err)
	}
	// The rename is atomic: a crash leaves the old file or the new one.
	renameErr := os.Rename(tmp, c.path)
	db, err := openDB(c.path)
	if err != nil {
		// Nothing can be read or written from here on; the file on
		// disk is whole, and the next start opens it.
		return fmt.Errorf("compacting: reopening: %w", errors.Join(renameErr, err))
	}
	c.db = db
	if renameErr != nil {
		return fmt.Errorf("compacting: %w", renameErr)
	}
	return nil
}

// view runs fn in a read transaction of the file.
func (c *committer) view(fn func(*bolt.Tx) error) error {
	c.swap.RLock()
	defer c.swap.RUnlock()
	return c.db.View(fn)
}

// close commits what is queued, refuses writes from then on, and closes
// the file.
func (c *committer) close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	c.swap.Lock()
	defer c.swap.Unlock()
	return c.db.Close()
}

func (c *committer) stats() Stats {
	return Stats{Commits: c.commits.Load(), Writes: c.writes.Load(), Compactions: c.compactions.Load()}
}
