// Package filestore keeps chat rooms' histories in one bbolt file, so that
// rooms, their ids and their idempotency keys survive a restart.
//
// Each room is a bucket holding its epoch, its last sequence number, its
// newest messages and the idempotency keys of those messages. A message, its
// key and the trimming of the oldest messages are one transaction, so the
// file holds at most a room's history, and trimSlack messages more, per room
// and never half a message.
// Submits waiting at the same time share one commit: one pair of fsyncs
// serves a burst (see committer).
package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// LockTimeout is how long Open waits for a file that another process holds.
const LockTimeout = 2 * time.Second

// Store is a rooms.Store backed by a bbolt file. Its
// methods are safe for concurrent use.
type Store struct {
	path   string
	db     *bolt.DB
	commit *committer
	// keys holds the keys used since the file was opened, so that a
	// retry is answered without reading the file, and the keys of
	// messages that the history does not keep.
	keys *rooms.KeyIndex
}

// Names of the buckets and keys in the file.
var (
	roomsBucket = []byte("rooms") // one bucket per room inside
	msgsBucket  = []byte("msgs")  // sequence number → message
	keysBucket  = []byte("keys")  // hash of scope and key → its message
	epochKey    = []byte("epoch")
	lastKey     = []byte("last")
	oldestKey   = []byte("oldest") // the oldest message shown: those before it are trimmed, or hidden until trimmed
)

// Open opens or creates the store file at path, creating its directory. It
// refuses, with the path and the reason, a file it cannot write, one that
// another process holds for longer than LockTimeout, and one that is not a
// valid store; it never truncates or rewrites an existing file.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("chat store %s: creating its directory: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: LockTimeout,
		// The freelist is rebuilt when the file is opened rather than
		// written on every commit: fewer pages per submit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("chat store %s is locked by another process (another Caddy using the same file?); gave up after %v", path, LockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, corrupt(path, err)
	case err != nil:
		return nil, fmt.Errorf("chat store %s: %w", path, err)
	}
	s := &Store{path: path, db: db, keys: rooms.NewKeyIndex()}
	if err := s.check(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	s.commit = newCommitter(db)
	return s, nil
}

// corrupt says that the file at path is not a store and what to do about it.
func corrupt(path string, err error) error {
	return fmt.Errorf("chat store %s is not a valid store file (%v): it was left as it is; move it aside, e.g. mv %q %q, to start with an empty store, or restore it from a backup", path, err, path, path+".corrupt")
}

// check walks the file's structure once, so that a damaged file is refused
// at start rather than failing submits later. bbolt panics on some damaged
// pages; that too means a corrupt file.
func (s *Store) check() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(s.path, fmt.Errorf("%v", p))
		}
	}()
	err = s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		all := tx.Bucket(roomsBucket)
		if all == nil {
			return nil
		}
		return all.ForEachBucket(func(name []byte) error {
			b := all.Bucket(name)
			if !rooms.ValidName(string(name)) || b.Get(epochKey) == nil || len(b.Get(lastKey)) != 8 || b.Bucket(msgsBucket) == nil || b.Bucket(keysBucket) == nil {
				return fmt.Errorf("room %q is malformed", name)
			}
			return nil
		})
	})
	if err != nil {
		return corrupt(s.path, err)
	}
	return nil
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close waits for commits under way and closes the file.
func (s *Store) Close() error {
	s.commit.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing chat store %s: %w", s.path, err)
	}
	return nil
}

// Stats counts the store's work since Open.
type Stats struct {
	Commits int64 // transactions written, each with its fsyncs
	Writes  int64 // messages, trims and drops they carried
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats { return s.commit.stats() }

// Kept returns the names of the rooms the file holds.
func (s *Store) Kept(context.Context) ([]string, error) {
	var names []string
	err := s.db.View(func(tx *bolt.Tx) error {
		all := tx.Bucket(roomsBucket)
		if all == nil {
			return nil
		}
		return all.ForEachBucket(func(name []byte) error {
			names = append(names, string(name))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing rooms of chat store %s: %w", s.path, err)
	}
	return names, nil
}

// HeldElsewhere says no: one process at a time has the file.
func (s *Store) HeldElsewhere(context.Context, string) (bool, error) { return false, nil }

// SetIdleTimeout does nothing: the Manager sweeps idle rooms, and drops
// them from the file.
func (s *Store) SetIdleTimeout(time.Duration) {}

// SetKeyWindow sets how long a key is remembered, in the file and in
// memory, and how many the memory holds at most. The file holds the keys
// of the messages it keeps, at most a history's worth per room.
func (s *Store) SetKeyWindow(window time.Duration, maxKeys int) {
	s.keys.SetWindow(window, maxKeys)
}

// Open returns the room's history: as the file holds it, or a new epoch
// with nothing stored until the first message.
func (s *Store) Open(_ context.Context, room string, capacity int) (rooms.History, error) {
	h := &history{s: s, room: room, name: []byte(room), capacity: capacity}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := roomBucket(tx, h.name)
		if b == nil {
			return nil
		}
		h.epoch, h.last, h.stored = string(b.Get(epochKey)), binary.BigEndian.Uint64(b.Get(lastKey)), true
		h.first = h.last + 1
		if k, _ := b.Bucket(msgsBucket).Cursor().First(); k != nil {
			h.first = binary.BigEndian.Uint64(k)
		}
		// Messages past the history, left by trimSlack or by a larger
		// history than the file was written with, are hidden now and
		// trimmed by a later append.
		h.oldest = max(h.first, h.last+1-min(h.last, uint64(capacity)))
		if v := b.Get(oldestKey); len(v) == 8 {
			h.oldest = max(h.oldest, binary.BigEndian.Uint64(v))
		}
		h.shown.Store(h.oldest)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading room %q from chat store %s: %w", room, s.path, err)
	}
	if !h.stored {
		h.epoch, h.oldest, h.first = rooms.NewEpoch(), 1, 1
	}
	return h, nil
}

func roomBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	all := tx.Bucket(roomsBucket)
	if all == nil {
		return nil
	}
	return all.Bucket(name)
}

// history is one room in the file. It caches only the room's position; its
// messages are read from the file, whose pages the OS caches, so memory does
// not grow with history.
type history struct {
	s        *Store
	room     string
	name     []byte
	epoch    string
	last     uint64
	oldest   uint64        // the oldest message the room shows
	shown    atomic.Uint64 // oldest, for Recall, which runs with the room released
	first    uint64        // the oldest message the file holds: oldest, or up to trimSlack older
	capacity int
	stored   bool // the file has the room's bucket
	appended rooms.Appended
	written  written // by the call under way (see Start)
}

// written is what a call's commit wrote, for Finish to take into the
// history.
type written struct {
	entries      []rooms.Entry
	err          error
	first, last  uint64
	oldest, held uint64
}

// trimSlack is how many messages past its history a room may hold in the
// file, hidden, before an append trims them. Trimming at every append
// rewrites the page of the oldest messages in every commit besides the page
// of the newest; trimming a run of them at once spares most commits that
// page and its writes.
const trimSlack = 64

func (h *history) Epoch() string  { return h.epoch }
func (h *history) Last() uint64   { return h.last }
func (h *history) Oldest() uint64 { return h.oldest }

// Start writes the messages, their keys and the room's new position, and
// trims what no longer fits once more than trimSlack messages are hidden,
// in one commit, with the room locked: the submits that come meanwhile
// share the next commit. The history is the call itself, one at a time
// (Depth), and the room's position moves in Finish, so that no reader
// counts the messages before Catch delivers them.
func (h *history) Start(ctx context.Context, entries []rooms.Entry) rooms.Call {
	h.written = h.write(ctx, entries)
	return h
}

func (h *history) Depth() int { return 1 }

// Wait has nothing to wait for: Start wrote.
func (h *history) Wait(context.Context) {}

// Finish takes what Start wrote into the history and the entries.
func (h *history) Finish() error {
	w := h.written
	h.written = written{}
	if w.err != nil {
		return w.err
	}
	// A batch of repeats alone wrote nothing.
	h.stored = h.stored || w.last != h.last
	h.last, h.oldest, h.first = w.last, w.oldest, w.held
	h.shown.Store(h.oldest)
	seq := w.first
	for i := range w.entries {
		e := &w.entries[i]
		if e.Outcome != rooms.Stored {
			continue
		}
		e.Message.ID = rooms.FormatID(h.epoch, seq)
		if e.Key.Name != "" {
			h.s.keys.Put(h.room, h.epoch, e.Key, seq, e.Message)
		}
		seq++
	}
	h.appended.Add(w.entries)
	return nil
}

// write commits, after the room's last message, the entries whose keys are
// new: those used before are decided here, with the room locked, so that
// no other write to the room comes between the lookup and the commit.
func (h *history) write(ctx context.Context, entries []rooms.Entry) written {
	stored := make([]rooms.Entry, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		if e.Key.Name != "" {
			rec, err := h.Recall(ctx, e.Key, e.Message)
			if err != nil {
				return written{err: err}
			}
			if !e.Decide(h.epoch, rec) {
				continue
			}
		}
		stored = append(stored, *e)
	}
	first := h.last + 1
	last := h.last + uint64(len(stored))
	if len(stored) == 0 {
		return written{entries: entries, first: first, last: h.last, oldest: h.oldest, held: h.first}
	}
	// Only the newest capacity of them are kept: encode no more.
	keep := stored[len(stored)-min(len(stored), h.capacity):]
	recs := make([][]byte, len(keep))
	hashes := make([][]byte, len(keep))
	for i, e := range keep {
		if e.Key.Name != "" {
			hashes[i] = rooms.KeyDigest(e.Key)
		}
		recs[i] = encode(e.Message, hashes[i])
	}
	held := h.first
	oldest := max(h.oldest, held, last+1-min(last, uint64(h.capacity)))
	err := h.s.commit.do(ctx, func(tx *bolt.Tx) error {
		b, err := h.create(tx)
		if err != nil {
			return err
		}
		if err := b.Put(lastKey, u64(last)); err != nil {
			return err
		}
		if err := b.Put(oldestKey, u64(oldest)); err != nil {
			return err
		}
		msgs, keys := b.Bucket(msgsBucket), b.Bucket(keysBucket)
		seq := first + uint64(len(stored)-len(keep))
		for i, e := range keep {
			if err := msgs.Put(u64(seq), recs[i]); err != nil {
				return err
			}
			if hashes[i] != nil {
				if err := keys.Put(hashes[i], keyRecord(seq, e.Message)); err != nil {
					return err
				}
			}
			seq++
		}
		if last+1-held > uint64(h.capacity)+trimSlack {
			held, err = trim(b, last, h.capacity)
		}
		return err
	})
	if err != nil {
		return written{err: fmt.Errorf("appending to room %q in chat store %s: %w", h.room, h.s.path, err)}
	}
	return written{entries: entries, first: first, last: last, oldest: oldest, held: held}
}

// create returns the room's bucket, making it with the room's epoch.
func (h *history) create(tx *bolt.Tx) (*bolt.Bucket, error) {
	all, err := tx.CreateBucketIfNotExists(roomsBucket)
	if err != nil {
		return nil, err
	}
	if b := all.Bucket(h.name); b != nil {
		return b, nil
	}
	b, err := all.CreateBucket(h.name)
	if err != nil {
		return nil, err
	}
	for _, err := range []error{
		b.Put(epochKey, []byte(h.epoch)),
		b.Put(lastKey, u64(h.last)),
		func() error { _, err := b.CreateBucket(msgsBucket); return err }(),
		func() error { _, err := b.CreateBucket(keysBucket); return err }(),
	} {
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// trim deletes the messages, and their keys, that fall out of a history of
// capacity ending at last, and returns the oldest sequence number kept.
func trim(b *bolt.Bucket, last uint64, capacity int) (uint64, error) {
	oldest := last + 1 - min(last, uint64(capacity))
	msgs, keys := b.Bucket(msgsBucket), b.Bucket(keysBucket)
	c := msgs.Cursor()
	// Each deletion seeks the first key again: bbolt's cursor skips a key
	// when Next follows a Delete, and a run of deletions left some behind.
	for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) < oldest; k, v = c.First() {
		if kh := recordKey(v); kh != nil {
			// The key may have been used again since for a newer
			// message of the room; keep that one.
			if r := keys.Get(kh); len(r) >= 8 && binary.BigEndian.Uint64(r) == binary.BigEndian.Uint64(k) {
				if err := keys.Delete(kh); err != nil {
					return 0, err
				}
			}
		}
		if err := c.Delete(); err != nil {
			return 0, err
		}
	}
	return oldest, nil
}

// Read reads in a read transaction of its own and uses only what Open set,
// so that it runs beside an Append.
func (h *history) Read(_ context.Context, after, upto uint64, limit int) ([]rooms.Message, error) {
	if after >= upto || limit <= 0 {
		return nil, nil
	}
	out := make([]rooms.Message, 0, min(uint64(limit), upto-after))
	err := h.s.db.View(func(tx *bolt.Tx) error {
		b := roomBucket(tx, h.name)
		if b == nil {
			return nil
		}
		c := b.Bucket(msgsBucket).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit && binary.BigEndian.Uint64(k) <= upto; k, v = c.Next() {
			m, err := decode(v)
			if err != nil {
				return fmt.Errorf("message %d: %w", binary.BigEndian.Uint64(k), err)
			}
			m.ID, m.Room = rooms.FormatID(h.epoch, binary.BigEndian.Uint64(k)), h.room
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading room %q from chat store %s: %w", h.room, h.s.path, err)
	}
	return out, nil
}

func (h *history) Resize(ctx context.Context, capacity int) error {
	if h.stored && capacity < h.capacity {
		var oldest uint64
		err := h.s.commit.do(ctx, func(tx *bolt.Tx) error {
			b := roomBucket(tx, h.name)
			if b == nil {
				return nil
			}
			var err error
			oldest, err = trim(b, h.last, capacity)
			return err
		})
		if err != nil {
			return fmt.Errorf("trimming room %q in chat store %s: %w", h.room, h.s.path, err)
		}
		h.oldest, h.first = max(h.oldest, oldest), max(h.first, oldest)
		h.shown.Store(h.oldest)
	}
	h.capacity = capacity
	return nil
}

// Drop deletes the room's bucket: its messages, keys and position.
func (h *history) Drop(ctx context.Context) error {
	if !h.stored {
		return nil
	}
	err := h.s.commit.do(ctx, func(tx *bolt.Tx) error {
		all := tx.Bucket(roomsBucket)
		if all == nil || all.Bucket(h.name) == nil {
			return nil
		}
		return all.DeleteBucket(h.name)
	})
	if err != nil {
		return fmt.Errorf("deleting room %q from chat store %s: %w", h.room, h.s.path, err)
	}
	h.stored = false
	return nil
}

// Expire forgets an idle room as Drop does: no other process keeps it.
func (h *history) Expire(ctx context.Context) error { return h.Drop(ctx) }

func (h *history) Close() error { return nil }

// Follow has nothing to follow: only this process appends to the file.
func (h *history) Follow(func()) {}

func (h *history) Catch() ([]rooms.Message, bool) { return h.appended.Take(), false }

// Sync has nothing to read: what this process stored is all there is.
func (h *history) Sync(context.Context) error { return nil }

// Recall looks k up among the keys used since the file was opened, then
// among the keys of the messages the room keeps in the file.
func (h *history) Recall(_ context.Context, k rooms.Key, m rooms.Message) (rooms.Recalled, error) {
	if rec := h.s.keys.Recall(h.room, k, m); rec.Seq != 0 {
		return rec, nil
	}
	var rec rooms.Recalled
	window := h.s.keys.Window()
	err := h.s.db.View(func(tx *bolt.Tx) error {
		b := roomBucket(tx, h.name)
		if b == nil {
			return nil
		}
		// A key of a message hidden past the history, not yet trimmed, is
		// forgotten as a trimmed one's is.
		v := b.Bucket(keysBucket).Get(rooms.KeyDigest(k))
		if len(v) != 8+8+rooms.DigestSize || binary.BigEndian.Uint64(v) < h.shown.Load() {
			return nil
		}
		at := time.UnixMilli(int64(binary.BigEndian.Uint64(v[8:])))
		if time.Since(at) >= window {
			return nil
		}
		rec = rooms.Recalled{Epoch: h.epoch, Seq: binary.BigEndian.Uint64(v), Time: at.UTC(), Same: bytes.Equal(v[16:], rooms.ContentDigest(m))}
		return nil
	})
	if err != nil {
		return rooms.Recalled{}, fmt.Errorf("reading keys of room %q from chat store %s: %w", h.room, h.s.path, err)
	}
	return rec, nil
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// keyRecord is a key's entry: its message's sequence number, its time in
// Unix milliseconds and sum.
func keyRecord(seq uint64, m rooms.Message) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16+rooms.DigestSize), seq)
	v = binary.BigEndian.AppendUint64(v, uint64(m.Time.UnixMilli()))
	return append(v, rooms.ContentDigest(m)...)
}

// A message's record is its time in Unix milliseconds (8 bytes), a flags
// byte, the key hash when flagged, the user's length as a uvarint, the user
// and the text. Its id and room are the bucket's.
const (
	flagVerified = 1 << iota
	flagKey
)

func encode(m rooms.Message, kh []byte) []byte {
	rec := make([]byte, 0, 9+len(kh)+binary.MaxVarintLen64+len(m.User)+len(m.Message))
	rec = binary.BigEndian.AppendUint64(rec, uint64(m.Time.UnixMilli()))
	var flags byte
	if m.Verified {
		flags |= flagVerified
	}
	if kh != nil {
		flags |= flagKey
	}
	rec = append(append(rec, flags), kh...)
	rec = binary.AppendUvarint(rec, uint64(len(m.User)))
	rec = append(rec, m.User...)
	return append(rec, m.Message...)
}

var errRecord = errors.New("malformed message record")

func decode(rec []byte) (rooms.Message, error) {
	if len(rec) < 9 {
		return rooms.Message{}, errRecord
	}
	m := rooms.Message{Time: time.UnixMilli(int64(binary.BigEndian.Uint64(rec))).UTC(), Verified: rec[8]&flagVerified != 0}
	rest := rec[9:]
	if rec[8]&flagKey != 0 {
		if len(rest) < rooms.DigestSize {
			return rooms.Message{}, errRecord
		}
		rest = rest[rooms.DigestSize:]
	}
	n, l := binary.Uvarint(rest)
	if l <= 0 || n > uint64(len(rest)-l) {
		return rooms.Message{}, errRecord
	}
	m.User, m.Message = string(rest[l:l+int(n)]), string(rest[l+int(n):])
	return m, nil
}

// recordKey returns the key hash a record carries, nil for none.
func recordKey(rec []byte) []byte {
	if len(rec) < 9+rooms.DigestSize || rec[8]&flagKey == 0 {
		return nil
	}
	return rec[9 : 9+rooms.DigestSize]
}

// Interface guards
var (
	_ rooms.Store   = (*Store)(nil)
	_ rooms.History = (*history)(nil)
)
