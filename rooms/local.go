package rooms

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Log is one room's messages as a local engine keeps them: the engine
// names their ids, decides their idempotency keys, and tracks the room's
// position; a Log only appends, reads, trims and drops. The engine
// serialises calls on one Log, but for Read and Recall, which run with
// the room released.
type Log interface {
	// Append stores the messages of the entries whose Outcome is Stored,
	// named already, in order after the log's last, in a history that
	// shows messages from oldest on: the log may forget older ones. It
	// applies the actions among them, decided already, in the same write
	// (see Entry and Apply).
	Append(ctx context.Context, entries []Entry, oldest uint64) error
	// Get returns the entry stored under seq, with its Author; found is
	// false when the log does not hold it. Like Read, it may run with the
	// room released.
	Get(ctx context.Context, seq uint64) (m Message, found bool, err error)
	// Read returns up to limit messages with sequence numbers in
	// (after, upto], oldest first, as History.Read.
	Read(ctx context.Context, after, upto uint64, limit int) ([]Message, error)
	// Resize keeps at most capacity messages of those up to last.
	Resize(ctx context.Context, last uint64, capacity int) error
	// Recall returns what k was first used for among the keys the log
	// keeps with its messages from oldest on, so that a key outlives the
	// process that stored it; Seq is 0 when it holds none. The engine
	// checks the key window.
	Recall(ctx context.Context, k Key, m Message, oldest uint64) (Recalled, error)
	// Drop deletes the log.
	Drop(ctx context.Context) error
	// Close releases the log and keeps what it holds.
	Close() error
}

// Logs is where a local engine keeps its rooms: in memory, or in a file.
type Logs interface {
	// OpenLog returns the log of room, keeping at most capacity
	// messages, and the position it holds. A log that holds nothing
	// takes epoch as its own and stores nothing until its first Append.
	OpenLog(ctx context.Context, room, epoch string, capacity int) (Log, LogPosition, error)
	// Kept returns the rooms that the logs hold from an earlier process,
	// as Store.Kept.
	Kept(ctx context.Context) ([]string, error)
	// KeepBans keeps the bans of keep and forgets those of the ids in
	// forget, lifted or expired, at once; logs that forget on a restart
	// keep nothing. The engine holds the bans in force in memory; durable
	// logs hand them back to NewLocalStore when they open.
	KeepBans(ctx context.Context, keep []Ban, forget []string) error
	// Position and SetPosition keep positions, as Store's: logs that
	// forget on a restart keep them in memory.
	Position(ctx context.Context, name string) (string, error)
	SetPosition(ctx context.Context, name, value string) error
}

// LogPosition is where a room's log stands: its epoch, the sequence
// number of its newest message (0 for none) and of its oldest shown.
type LogPosition struct {
	Epoch        string
	Last, Oldest uint64
}

// LocalStore is the engine of the stores that this process alone uses: it
// names ids, decides idempotency keys with a KeyIndex of its own, keeps
// each room's messages in a Log of its Logs, and holds the bans in
// memory, writing them through to its Logs.
type LocalStore struct {
	logs Logs
	keys *KeyIndex
	// banning orders the writes of bans, so that a room's count and what
	// the logs keep agree with the list.
	banning sync.Mutex
	bans    BanList
	leases  leases
}

// NewLocalStore returns the local engine over logs, holding the bans that
// logs kept from an earlier process: those expired are forgotten at the
// next write.
func NewLocalStore(logs Logs, kept []Ban) *LocalStore {
	s := &LocalStore{logs: logs, keys: NewKeyIndex()}
	s.bans.Replace(kept)
	return s
}

// PutBan writes b through to the logs, with the bans expired since the
// last write forgotten, then holds it.
func (s *LocalStore) PutBan(ctx context.Context, b Ban, limit int) (Ban, error) {
	s.banning.Lock()
	defer s.banning.Unlock()
	now := time.Now()
	if s.bans.Full(b.Room, limit, now) {
		return Ban{}, ErrTooManyBans
	}
	expired := s.bans.Expired(now)
	if err := s.logs.KeepBans(ctx, []Ban{b}, expired); err != nil {
		return Ban{}, err
	}
	s.bans.Remove(expired...)
	s.bans.Put(b)
	return b, nil
}

// Bans lists the room's bans from memory, which holds them all.
func (s *LocalStore) Bans(_ context.Context, room string) ([]Ban, error) {
	return s.bans.List(room, time.Now()), nil
}

// LiftBan forgets the ban in the logs, then in memory.
func (s *LocalStore) LiftBan(ctx context.Context, room, id string) error {
	s.banning.Lock()
	defer s.banning.Unlock()
	if _, ok := s.bans.Get(room, id, time.Now()); !ok {
		return ErrBanNotFound
	}
	if err := s.logs.KeepBans(ctx, nil, []string{id}); err != nil {
		return err
	}
	s.bans.Remove(id)
	return nil
}

// Banned looks the subject up in memory.
func (s *LocalStore) Banned(room, subject string) (Ban, bool) {
	return s.bans.Banned(room, subject)
}

// Position reads the position from the logs.
func (s *LocalStore) Position(ctx context.Context, name string) (string, error) {
	return s.logs.Position(ctx, name)
}

// SetPosition writes the position through to the logs.
func (s *LocalStore) SetPosition(ctx context.Context, name, value string) error {
	return s.logs.SetPosition(ctx, name, value)
}

// Lease grants leases from memory: this process alone uses the logs, but
// two configs of it may overlap during a reload.
func (s *LocalStore) Lease(_ context.Context, name, holder string, ttl time.Duration) (bool, error) {
	return s.leases.grant(name, holder, ttl, time.Now()), nil
}

// ReleaseLease forgets the lease in memory.
func (s *LocalStore) ReleaseLease(_ context.Context, name, holder string) error {
	s.leases.release(name, holder)
	return nil
}

// Kept returns the rooms the logs kept from an earlier process.
func (s *LocalStore) Kept(ctx context.Context) ([]string, error) { return s.logs.Kept(ctx) }

// HeldElsewhere says no: no other process shares the logs.
func (*LocalStore) HeldElsewhere(context.Context, string) (bool, error) { return false, nil }

// SetIdleTimeout does nothing: the Manager sweeps idle rooms itself.
func (*LocalStore) SetIdleTimeout(time.Duration) {}

// SetKeyWindow sets the window and budget of the engine's key index.
func (s *LocalStore) SetKeyWindow(window time.Duration, maxKeys int) {
	s.keys.SetWindow(window, maxKeys)
}

// Open returns the room's history, as its log holds it.
func (s *LocalStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	log, pos, err := s.logs.OpenLog(ctx, room, NewEpoch(), capacity)
	if err != nil {
		return nil, err
	}
	h := &local{log: log, keys: s.keys, room: room, epoch: pos.Epoch, last: pos.Last, capacity: capacity}
	h.oldest = max(pos.Oldest, h.shows(pos.Last))
	h.shown.Store(h.oldest)
	return h, nil
}

// local is a History of the local engine.
type local struct {
	log      Log
	keys     *KeyIndex
	room     string
	epoch    string
	last     uint64
	oldest   uint64
	shown    atomic.Uint64 // oldest, for Recall, which runs with the room released
	capacity int
	appended Appended
	// The call under way (see Start).
	pending []Entry
	stored  uint64
	err     error
}

// shows returns the oldest message that a history ending at last shows.
func (h *local) shows(last uint64) uint64 {
	return last + 1 - min(last, uint64(h.capacity))
}

func (h *local) Epoch() string  { return h.epoch }
func (h *local) Last() uint64   { return h.last }
func (h *local) Oldest() uint64 { return h.oldest }
func (h *local) Depth() int     { return 1 }

// Start decides the entries' keys, names the new messages and appends
// them to the log, with the room locked: a log on disk commits here, and
// the submits that come meanwhile share the next commit. The history is
// the call itself, one at a time (Depth), and the room's position moves
// in Finish, so that no reader counts the messages before Catch delivers
// them.
func (h *local) Start(ctx context.Context, entries []Entry) Call {
	h.pending, h.stored, h.err = entries, 0, nil
	for i := range entries {
		e := &entries[i]
		if e.Message.IsAction() {
			ok, err := h.acts(ctx, entries[:i], e.Message.Target)
			if err != nil {
				h.err = err
				return h
			}
			if !ok {
				e.Outcome = NoTarget
				continue
			}
		}
		if e.Key.Name != "" {
			rec, err := h.Recall(ctx, e.Key, e.Message)
			if err != nil {
				h.err = err
				return h
			}
			if !e.Decide(h.epoch, rec) {
				continue
			}
		}
		h.stored++
		e.Message.ID = FormatID(h.epoch, h.last+h.stored)
	}
	if h.stored > 0 {
		if err := h.log.Append(ctx, entries, max(h.oldest, h.shows(h.last+h.stored))); err != nil {
			h.err = fmt.Errorf("appending to room %q: %w", h.room, err)
		}
	}
	return h
}

// acts reports whether an action on target may be stored after the
// entries before it in its batch: the log holds target as a message shown
// in the history, and neither the log nor those entries deleted it.
func (h *local) acts(ctx context.Context, before []Entry, target string) (bool, error) {
	epoch, seq, ok := ParseID(target)
	if !ok || epoch != h.epoch || seq < h.oldest || seq > h.last {
		return false, nil
	}
	for _, e := range before {
		if e.Outcome == Stored && e.Message.Action == ActionDelete && e.Message.Target == target {
			return false, nil
		}
	}
	m, found, err := h.log.Get(ctx, seq)
	if err != nil {
		return false, fmt.Errorf("reading room %q: %w", h.room, err)
	}
	return found && m.ID == target && !m.IsAction() && !m.Deleted, nil
}

// Wait has nothing to wait for: Start appended.
func (h *local) Wait(context.Context) {}

// Finish moves the room's position past what Start appended, and
// remembers the new messages' keys.
func (h *local) Finish() error {
	entries := h.pending
	h.pending = nil
	if h.err != nil {
		return h.err
	}
	h.last += h.stored
	h.oldest = max(h.oldest, h.shows(h.last))
	h.shown.Store(h.oldest)
	for _, e := range entries {
		if e.Outcome == Stored && e.Key.Name != "" {
			_, seq, _ := ParseID(e.Message.ID)
			h.keys.Put(h.room, h.epoch, e.Key, seq, e.Message)
		}
	}
	h.appended.Add(entries)
	return nil
}

func (h *local) Read(ctx context.Context, after, upto uint64, limit int) ([]Message, error) {
	if after >= upto || limit <= 0 {
		return nil, nil
	}
	return h.log.Read(ctx, after, upto, limit)
}

func (h *local) Lookup(ctx context.Context, seq uint64) (Message, bool, error) {
	if seq < h.shown.Load() {
		return Message{}, false, nil
	}
	return h.log.Get(ctx, seq)
}

func (h *local) Resize(ctx context.Context, capacity int) error {
	if err := h.log.Resize(ctx, h.last, capacity); err != nil {
		return fmt.Errorf("trimming room %q: %w", h.room, err)
	}
	h.capacity = capacity
	h.oldest = max(h.oldest, h.shows(h.last))
	h.shown.Store(h.oldest)
	return nil
}

func (h *local) Drop(ctx context.Context) error { return h.log.Drop(ctx) }

// Expire drops the history: no other process keeps it.
func (h *local) Expire(ctx context.Context) error { return h.log.Drop(ctx) }
func (h *local) Close() error                     { return h.log.Close() }
func (h *local) Follow(func())                    {}
func (h *local) Catch() ([]Message, bool)         { return h.appended.Take(), false }

// Sync has nothing to read: what this process stored is all there is.
func (h *local) Sync(context.Context) error { return nil }

// Recall looks k up among the keys used since the engine started, then
// among those the log keeps with its messages.
func (h *local) Recall(ctx context.Context, k Key, m Message) (Recalled, error) {
	if rec := h.keys.Recall(h.room, k, m); rec.Seq != 0 {
		return rec, nil
	}
	rec, err := h.log.Recall(ctx, k, m, h.shown.Load())
	if err != nil {
		return Recalled{}, fmt.Errorf("reading keys of room %q: %w", h.room, err)
	}
	if rec.Seq != 0 && expired(rec.Time.UnixMilli(), time.Now(), h.keys.Window()) {
		return Recalled{}, nil
	}
	return rec, nil
}
