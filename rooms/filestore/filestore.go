// Package filestore keeps chat rooms' histories in one bbolt file, so that
// rooms, their ids and their idempotency keys survive a restart.
//
// Each room is a bucket holding its epoch, its last sequence number, its
// newest messages and the idempotency keys of those messages; bans are
// kept in a bucket of their own, read when the file opens. A message, its
// key and the trimming of the oldest messages are one transaction, so the
// file holds at most a room's history, and trimSlack messages more, per room
// and never half a message.
// Submits waiting at the same time share one commit: one pair of fsyncs
// serves a burst (see committer). An edit or a delete rewrites its target
// in the commit that stores it; after a delete, the file is compacted into
// a new one within CompactEvery, so that the text it erased leaves the
// disk, not only the history. The commits of every room wait for the copy:
// deletes within CompactEvery share one.
package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// LockTimeout is how long Open waits for a file that another process holds.
const LockTimeout = 2 * time.Second

// Store is a rooms.Store backed by a bbolt file: the local engine
// (rooms.LocalStore) over a log per room in the file. Its methods are safe
// for concurrent use.
type Store struct {
	*rooms.LocalStore
	path   string
	commit *committer
}

// Names of the buckets and keys in the file.
var (
	roomsBucket = []byte("rooms")     // one bucket per room inside
	bansBucket  = []byte("bans")      // ban id → the ban's JSON
	posBucket   = []byte("positions") // name → value (see rooms.Store.Position)
	// erasingBucket, empty, is there while a delete's text waits for the
	// compaction that erases it from the disk: a process that stopped
	// before it runs it when it opens the file again.
	erasingBucket = []byte("erasing")
	msgsBucket    = []byte("msgs") // sequence number → message
	keysBucket    = []byte("keys") // hash of scope and key → its message
	epochKey      = []byte("epoch")
	lastKey       = []byte("last")
	oldestKey     = []byte("oldest") // the oldest message shown: those before it are trimmed, or hidden until trimmed
)

// Open opens or creates the store file at path, creating its directory. It
// refuses, with the path and the reason, a file it cannot write, one that
// another process holds for longer than LockTimeout, and one that is not a
// valid store; it never truncates or rewrites an existing file.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("chat store %s: creating its directory: %w", path, err)
	}
	db, err := openDB(path)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("chat store %s is locked by another process (another Caddy using the same file?); gave up after %v", path, LockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, corrupt(path, err)
	case err != nil:
		return nil, fmt.Errorf("chat store %s: %w", path, err)
	}
	s := &Store{path: path}
	if err := s.check(db); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	bans, err := s.readBans(db)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	erasing := false
	if err := db.View(func(tx *bolt.Tx) error {
		erasing = tx.Bucket(erasingBucket) != nil
		return nil
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("chat store %s: %w", path, err), db.Close())
	}
	s.LocalStore = rooms.NewLocalStore((*logs)(s), bans)
	s.commit = newCommitter(db, path, erasing)
	return s, nil
}

// openDB opens the bbolt file at path as the store uses it.
func openDB(path string) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: LockTimeout,
		// The freelist is rebuilt when the file is opened rather than
		// written on every commit: fewer pages per submit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
}

// corrupt says that the file at path is not a store and what to do about it.
func corrupt(path string, err error) error {
	return fmt.Errorf("chat store %s is not a valid store file (%v): it was left as it is; move it aside, e.g. mv %q %q, to start with an empty store, or restore it from a backup", path, err, path, path+".corrupt")
}

// check walks the file's structure once, so that a damaged file is refused
// at start rather than failing submits later. bbolt panics on some damaged
// pages; that too means a corrupt file.
func (s *Store) check(db *bolt.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(s.path, fmt.Errorf("%v", p))
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
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

// readBans returns the bans the file keeps, expired ones too: the engine
// forgets those at its next write. A ban that does not decode makes the
// file corrupt.
func (s *Store) readBans(db *bolt.DB) ([]rooms.Ban, error) {
	var bans []rooms.Ban
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bansBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(id, v []byte) error {
			var ban rooms.Ban
			if err := json.Unmarshal(v, &ban); err != nil || ban.ID != string(id) {
				return fmt.Errorf("ban %q is malformed", id)
			}
			bans = append(bans, ban)
			return nil
		})
	})
	if err != nil {
		return nil, corrupt(s.path, err)
	}
	return bans, nil
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// OnCompactError has report called with the error of each compaction that
// fails, after a delete: the delete is stored, and its erased text stays
// in the file's free pages until a compaction succeeds.
func (s *Store) OnCompactError(report func(error)) { s.commit.failed.Store(&report) }

// Close waits for commits under way, compacts the file when a delete's
// text waits for it, and closes the file.
func (s *Store) Close() error {
	if err := s.commit.close(); err != nil {
		return fmt.Errorf("closing chat store %s: %w", s.path, err)
	}
	return nil
}

// Stats counts the store's work since Open.
type Stats struct {
	Commits int64 // transactions written, each with its fsyncs
	Writes  int64 // messages, trims and drops they carried
	// Compactions counts the copies of the file that erased the text
	// of deletes, those that failed included.
	Compactions int64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats { return s.commit.stats() }

// logs is the Store as the local engine's rooms.Logs.
type logs Store

// Kept returns the names of the rooms the file holds.
func (s *logs) Kept(context.Context) ([]string, error) {
	var names []string
	err := s.commit.view(func(tx *bolt.Tx) error {
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

// KeepBans writes the bans of keep and deletes those of forget in one
// commit.
func (s *logs) KeepBans(ctx context.Context, keep []rooms.Ban, forget []string) error {
	recs := make([][]byte, len(keep))
	for i, b := range keep {
		var err error
		if recs[i], err = json.Marshal(b); err != nil {
			return fmt.Errorf("encoding ban %q: %w", b.ID, err)
		}
	}
	err := s.commit.do(ctx, false, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bansBucket)
		if err != nil {
			return err
		}
		for _, id := range forget {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		for i, ban := range keep {
			if err := b.Put([]byte(ban.ID), recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing bans to chat store %s: %w", s.path, err)
	}
	return nil
}

// Position reads the position from the file.
func (s *logs) Position(_ context.Context, name string) (string, error) {
	var value string
	err := s.commit.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(posBucket); b != nil {
			value = string(b.Get([]byte(name)))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("reading position %q from chat store %s: %w", name, s.path, err)
	}
	return value, nil
}

// SetPosition writes the position, or deletes it, with the next commit.
func (s *logs) SetPosition(ctx context.Context, name, value string) error {
	err := s.commit.do(ctx, false, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(posBucket)
		if err != nil {
			return err
		}
		if value == "" {
			return b.Delete([]byte(name))
		}
		return b.Put([]byte(name), []byte(value))
	})
	if err != nil {
		return fmt.Errorf("writing position %q to chat store %s: %w", name, s.path, err)
	}
	return nil
}

// OpenLog returns the room's log: as the file holds it, or in epoch with
// nothing stored until the first message.
func (s *logs) OpenLog(_ context.Context, room, epoch string, capacity int) (rooms.Log, rooms.LogPosition, error) {
	l := &roomLog{s: (*Store)(s), room: room, name: []byte(room), epoch: epoch, capacity: capacity}
	pos := rooms.LogPosition{Epoch: epoch, Oldest: 1}
	err := s.commit.view(func(tx *bolt.Tx) error {
		b := roomBucket(tx, l.name)
		if b == nil {
			return nil
		}
		l.epoch, l.last, l.stored = string(b.Get(epochKey)), binary.BigEndian.Uint64(b.Get(lastKey)), true
		l.first = l.last + 1
		if k, _ := b.Bucket(msgsBucket).Cursor().First(); k != nil {
			l.first = binary.BigEndian.Uint64(k)
		}
		// Messages past the history, left by trimSlack or by a larger
		// history than the file was written with, are hidden now and
		// trimmed by a later append.
		pos = rooms.LogPosition{Epoch: l.epoch, Last: l.last, Oldest: l.first}
		if v := b.Get(oldestKey); len(v) == 8 {
			pos.Oldest = max(pos.Oldest, binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if err != nil {
		return nil, rooms.LogPosition{}, fmt.Errorf("reading room %q from chat store %s: %w", room, s.path, err)
	}
	return l, pos, nil
}

func roomBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	all := tx.Bucket(roomsBucket)
	if all == nil {
		return nil
	}
	return all.Bucket(name)
}

// roomLog is one room in the file. It caches only the room's position; its
// messages are read from the file, whose pages the OS caches, so memory does
// not grow with history.
type roomLog struct {
	s        *Store
	room     string
	name     []byte
	epoch    string
	last     uint64
	first    uint64 // the oldest message the file holds: the oldest shown, or up to trimSlack older
	capacity int
	stored   bool // the file has the room's bucket
}

// trimSlack is how many messages past its history a room may hold in the
// file, hidden, before an append trims them. Trimming at every append
// rewrites the page of the oldest messages in every commit besides the page
// of the newest; trimming a run of them at once spares most commits that
// page and its writes.
const trimSlack = 64

// Append writes the messages, their keys and the room's new position, and
// trims what no longer fits once more than trimSlack messages are hidden,
// in one commit.
func (l *roomLog) Append(ctx context.Context, entries []rooms.Entry, oldest uint64) error {
	stored := make([]rooms.Entry, 0, len(entries))
	for _, e := range entries {
		if e.Outcome == rooms.Stored {
			stored = append(stored, e)
		}
	}
	first := l.last + 1
	last := l.last + uint64(len(stored))
	// Only the newest capacity of them are kept: encode no more.
	keep := stored[len(stored)-min(len(stored), l.capacity):]
	recs := make([][]byte, len(keep))
	hashes := make([][]byte, len(keep))
	for i, e := range keep {
		if e.Key.Name != "" {
			hashes[i] = rooms.KeyDigest(e.Key)
		}
		recs[i] = encode(e.Message, hashes[i])
	}
	// A delete erases its target: bbolt keeps the bytes of the pages it
	// frees, so the file is compacted, and the text is gone from the
	// disk, not only from the history. An edit's old text need not go.
	erases := slices.ContainsFunc(stored, func(e rooms.Entry) bool { return e.Message.Action == rooms.ActionDelete })
	held := l.first
	err := l.s.commit.do(ctx, erases, func(tx *bolt.Tx) error {
		if erases {
			if _, err := tx.CreateBucketIfNotExists(erasingBucket); err != nil {
				return err
			}
		}
		b, err := l.create(tx)
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
		for _, e := range stored {
			if e.Message.IsAction() {
				if err := l.apply(msgs, keys, e.Message); err != nil {
					return err
				}
			}
		}
		if last+1-held > uint64(l.capacity)+trimSlack {
			held, err = trim(b, last, l.capacity)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("chat store %s: %w", l.s.path, err)
	}
	l.last, l.first, l.stored = last, held, true
	return nil
}

// apply rewrites the entries that the stored action a changes (see
// rooms.Apply): its target, and with a delete the edits of it, and the
// idempotency key of a deleted message, whose record holds a digest of
// its text. The local engine decided a: its target is held.
func (l *roomLog) apply(msgs, keys *bolt.Bucket, a rooms.Message) error {
	_, target, _ := rooms.ParseID(a.Target)
	changed := [][]byte{u64(target)}
	if a.Action == rooms.ActionDelete {
		// A cursor must not see the bucket change under it: the keys
		// are collected first.
		c := msgs.Cursor()
		for k, v := c.Seek(u64(target + 1)); k != nil; k, v = c.Next() {
			if len(v) > 8 && v[8]&flagEdit != 0 && recordTarget(v) == target {
				changed = append(changed, bytes.Clone(k))
			}
		}
	}
	for _, k := range changed {
		v := msgs.Get(k)
		if v == nil {
			continue
		}
		m, err := l.decode(k, v)
		if err != nil {
			return err
		}
		kh := recordKey(v)
		m = rooms.Apply(m, a)
		if m.Deleted && kh != nil {
			if r := keys.Get(kh); len(r) >= 8 && binary.BigEndian.Uint64(r) == binary.BigEndian.Uint64(k) {
				if err := keys.Delete(kh); err != nil {
					return err
				}
			}
			kh = nil
		}
		if err := msgs.Put(k, encode(m, kh)); err != nil {
			return err
		}
	}
	return nil
}

// decode returns the entry of record v stored under key k.
func (l *roomLog) decode(k, v []byte) (rooms.Message, error) {
	seq := binary.BigEndian.Uint64(k)
	m, target, err := decode(v)
	if err != nil {
		return rooms.Message{}, fmt.Errorf("message %d: %w", seq, err)
	}
	m.ID, m.Room = rooms.FormatID(l.epoch, seq), l.room
	if m.IsAction() {
		m.Target = rooms.FormatID(l.epoch, target)
	}
	return m, nil
}

// Get reads the entry stored under seq.
func (l *roomLog) Get(_ context.Context, seq uint64) (rooms.Message, bool, error) {
	var (
		m     rooms.Message
		found bool
	)
	err := l.s.commit.view(func(tx *bolt.Tx) error {
		b := roomBucket(tx, l.name)
		if b == nil {
			return nil
		}
		v := b.Bucket(msgsBucket).Get(u64(seq))
		if v == nil {
			return nil
		}
		var err error
		m, err = l.decode(u64(seq), v)
		found = err == nil
		return err
	})
	if err != nil {
		return rooms.Message{}, false, fmt.Errorf("reading room %q from chat store %s: %w", l.room, l.s.path, err)
	}
	return m, found, nil
}

// create returns the room's bucket, making it with the room's epoch.
func (l *roomLog) create(tx *bolt.Tx) (*bolt.Bucket, error) {
	all, err := tx.CreateBucketIfNotExists(roomsBucket)
	if err != nil {
		return nil, err
	}
	if b := all.Bucket(l.name); b != nil {
		return b, nil
	}
	b, err := all.CreateBucket(l.name)
	if err != nil {
		return nil, err
	}
	for _, err := range []error{
		b.Put(epochKey, []byte(l.epoch)),
		b.Put(lastKey, u64(l.last)),
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

func (l *roomLog) Read(_ context.Context, after, upto uint64, limit int) ([]rooms.Message, error) {
	out := make([]rooms.Message, 0, min(uint64(limit), upto-after))
	err := l.s.commit.view(func(tx *bolt.Tx) error {
		b := roomBucket(tx, l.name)
		if b == nil {
			return nil
		}
		c := b.Bucket(msgsBucket).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit && binary.BigEndian.Uint64(k) <= upto; k, v = c.Next() {
			m, err := l.decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading room %q from chat store %s: %w", l.room, l.s.path, err)
	}
	return out, nil
}

func (l *roomLog) Resize(ctx context.Context, last uint64, capacity int) error {
	if l.stored && capacity < l.capacity {
		var oldest uint64
		err := l.s.commit.do(ctx, false, func(tx *bolt.Tx) error {
			b := roomBucket(tx, l.name)
			if b == nil {
				return nil
			}
			var err error
			oldest, err = trim(b, last, capacity)
			return err
		})
		if err != nil {
			return fmt.Errorf("chat store %s: %w", l.s.path, err)
		}
		l.first = max(l.first, oldest)
	}
	l.capacity = capacity
	return nil
}

// Drop deletes the room's bucket: its messages, keys and position.
func (l *roomLog) Drop(ctx context.Context) error {
	if !l.stored {
		return nil
	}
	err := l.s.commit.do(ctx, false, func(tx *bolt.Tx) error {
		all := tx.Bucket(roomsBucket)
		if all == nil || all.Bucket(l.name) == nil {
			return nil
		}
		return all.DeleteBucket(l.name)
	})
	if err != nil {
		return fmt.Errorf("deleting room %q from chat store %s: %w", l.room, l.s.path, err)
	}
	l.stored = false
	return nil
}

func (l *roomLog) Close() error { return nil }

// Recall looks k up among the keys of the messages the room keeps in the
// file: a key of a message hidden past the history, not yet trimmed, is
// forgotten as a trimmed one's is.
func (l *roomLog) Recall(_ context.Context, k rooms.Key, m rooms.Message, oldest uint64) (rooms.Recalled, error) {
	var rec rooms.Recalled
	err := l.s.commit.view(func(tx *bolt.Tx) error {
		b := roomBucket(tx, l.name)
		if b == nil {
			return nil
		}
		if v := b.Bucket(keysBucket).Get(rooms.KeyDigest(k)); len(v) == 8+8+rooms.DigestSize && binary.BigEndian.Uint64(v) >= oldest {
			rec = rooms.Recalled{
				Epoch: l.epoch,
				Seq:   binary.BigEndian.Uint64(v),
				Time:  time.UnixMilli(int64(binary.BigEndian.Uint64(v[8:]))).UTC(),
				Same:  bytes.Equal(v[16:], rooms.ContentDigest(m)),
			}
		}
		return nil
	})
	if err != nil {
		return rooms.Recalled{}, fmt.Errorf("chat store %s: %w", l.s.path, err)
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
// byte, then what the flags call for, in this order: the key hash, the
// edit's time in Unix milliseconds (8 bytes), an action's target sequence
// number (8 bytes), and the authorship (client key and secret digest, each
// as a uvarint length and bytes); then the user's length as a uvarint, the
// user and the text. Its id and room are the bucket's. A record written
// before actions existed has none of the later flags.
const (
	flagVerified = 1 << iota
	flagKey
	flagEdited
	flagDeleted
	flagEdit   // an edit action
	flagDelete // a delete action
	flagModerator
	flagAuthor
)

func encode(m rooms.Message, kh []byte) []byte {
	a := m.Author
	rec := make([]byte, 0, 9+len(kh)+16+3*binary.MaxVarintLen64+len(a.ClientKey)+len(a.SecretDigest)+len(m.User)+len(m.Message))
	rec = binary.BigEndian.AppendUint64(rec, uint64(m.Time.UnixMilli()))
	var flags byte
	for _, f := range [...]struct {
		set  bool
		flag byte
	}{
		{m.Verified, flagVerified}, {kh != nil, flagKey}, {!m.Edited.IsZero(), flagEdited}, {m.Deleted, flagDeleted},
		{m.Action == rooms.ActionEdit, flagEdit}, {m.Action == rooms.ActionDelete, flagDelete},
		{m.ByModerator, flagModerator}, {a != (rooms.Authorship{}), flagAuthor},
	} {
		if f.set {
			flags |= f.flag
		}
	}
	rec = append(append(rec, flags), kh...)
	if flags&flagEdited != 0 {
		rec = binary.BigEndian.AppendUint64(rec, uint64(m.Edited.UnixMilli()))
	}
	if m.IsAction() {
		_, target, _ := rooms.ParseID(m.Target)
		rec = binary.BigEndian.AppendUint64(rec, target)
	}
	if flags&flagAuthor != 0 {
		rec = appendString(rec, a.ClientKey)
		rec = appendString(rec, a.SecretDigest)
	}
	rec = appendString(rec, m.User)
	return append(rec, m.Message...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errRecord = errors.New("malformed message record")

// decode returns the entry a record holds, without its id and room, and
// the sequence number of an action's target.
func decode(rec []byte) (m rooms.Message, target uint64, err error) {
	if len(rec) < 9 {
		return rooms.Message{}, 0, errRecord
	}
	flags := rec[8]
	m = rooms.Message{
		Time:        time.UnixMilli(int64(binary.BigEndian.Uint64(rec))).UTC(),
		Verified:    flags&flagVerified != 0,
		Deleted:     flags&flagDeleted != 0,
		ByModerator: flags&flagModerator != 0,
	}
	r := reader{rest: rec[9:]}
	if flags&flagKey != 0 {
		r.take(rooms.DigestSize)
	}
	if flags&flagEdited != 0 {
		m.Edited = time.UnixMilli(int64(r.u64())).UTC()
	}
	switch {
	case flags&flagEdit != 0:
		m.Action, target = rooms.ActionEdit, r.u64()
	case flags&flagDelete != 0:
		m.Action, target = rooms.ActionDelete, r.u64()
	}
	if flags&flagAuthor != 0 {
		m.Author.ClientKey, m.Author.SecretDigest = r.string(), r.string()
	}
	m.User = r.string()
	if r.bad {
		return rooms.Message{}, 0, errRecord
	}
	m.Message = string(r.rest)
	return m, target, nil
}

// reader takes the parts of a record in turn; bad is set once one is
// missing.
type reader struct {
	rest []byte
	bad  bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.rest) {
		r.bad = true
		return nil
	}
	b := r.rest[:n]
	r.rest = r.rest[n:]
	return b
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) string() string {
	n, l := binary.Uvarint(r.rest)
	if r.bad || l <= 0 || n > uint64(len(r.rest)-l) {
		r.bad = true
		return ""
	}
	r.rest = r.rest[l:]
	return string(r.take(int(n)))
}

// recordKey returns the key hash a record carries, nil for none.
func recordKey(rec []byte) []byte {
	if len(rec) < 9+rooms.DigestSize || rec[8]&flagKey == 0 {
		return nil
	}
	return rec[9 : 9+rooms.DigestSize]
}

// recordTarget returns the target sequence number of an action's record.
func recordTarget(rec []byte) uint64 {
	_, target, err := decode(rec)
	if err != nil {
		return 0
	}
	return target
}

// Interface guards
var (
	_ rooms.Store = (*Store)(nil)
	_ rooms.Logs  = (*logs)(nil)
	_ rooms.Log   = (*roomLog)(nil)
)
