package rooms

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"
)

// Store keeps the history of every room, for this process alone (the
// local engine, LocalStore, over logs in memory or in a file) or for every
// process that shares it (Redis).
// The Manager opens one History per room it creates and closes or drops it
// with the room; every backend implements the whole of these interfaces,
// so that the Manager runs one path whatever the backend.
//
// Methods that may block on a disk or a network take a context; an error
// they return means the operation did not happen, so the Manager answers it
// as the store being unavailable (ErrUnavailable) and keeps its state.
type Store interface {
	// Open returns the history of the named room, keeping at most capacity
	// messages. A backend that remembers a room across restarts returns its
	// old epoch and sequence; one that does not starts a new epoch, so that
	// ids from before are recognised as foreign. Opening a room that holds
	// nothing must not store anything: a stream to a made-up name costs no
	// disk.
	Open(ctx context.Context, room string, capacity int) (History, error)
	// Kept returns the rooms that an earlier process left in the store for
	// this one alone: the Manager made by Open takes them back, so that
	// they are listed, swept when idle and deleted like the rooms it made
	// itself. A store that forgets, or whose rooms every process shares
	// and opens as it is asked for them, returns none.
	Kept(ctx context.Context) ([]string, error)
	// HeldElsewhere reports whether another process made the named room,
	// which this one may not have open: its history must be served here,
	// and a post to it makes no new room. A store that no other process
	// shares says no.
	HeldElsewhere(ctx context.Context, room string) (bool, error)
	// SetIdleTimeout sets how long a room may go without a message before
	// a store that expires rooms itself, as one that several processes
	// share does, drops it; 0 keeps rooms until they are deleted. The
	// Manager calls it whenever it is configured; a store that leaves idle
	// rooms to the Manager's sweep ignores it.
	SetIdleTimeout(d time.Duration)
	// SetKeyWindow sets how long an idempotency key is remembered, and
	// how many keys a store that remembers them in memory keeps at most,
	// across all rooms. The Manager calls it whenever it is configured.
	SetKeyWindow(window time.Duration, maxKeys int)

	// PutBan keeps b, named and timed by the Manager, and returns it as
	// kept, or refuses it with ErrTooManyBans when b.Room holds limit
	// bans in force. Once it returns, Banned holds it in
	// this process, and within moments in every process sharing the
	// store; a durable store keeps it across a restart until it expires.
	PutBan(ctx context.Context, b Ban, limit int) (Ban, error)
	// Bans returns the bans of room in force, oldest first (see
	// Manager.Bans).
	Bans(ctx context.Context, room string) ([]Ban, error)
	// LiftBan forgets the ban of room with id, in every process sharing
	// the store, or answers ErrBanNotFound when room holds none in force.
	LiftBan(ctx context.Context, room, id string) error
	// Banned returns the ban in force that holds subject out of room,
	// directly or through AllRooms, from memory: it runs on every post,
	// and must cost no more than a map lookup, nothing at all when no ban
	// is held.
	Banned(room, subject string) (Ban, bool)

	// Position returns the value that SetPosition keeps under name, ""
	// for none: how far a reader of the rooms' logs outside the Manager,
	// such as a webhook, got, so that it goes on from there after a
	// reload, a restart with a durable store, or on another node.
	Position(ctx context.Context, name string) (string, error)
	// SetPosition keeps value under name, as durably as the store keeps
	// messages and for every process sharing it; "" forgets name. A store
	// that expires idle rooms itself may expire a position that was not
	// set again for long after its room would have.
	SetPosition(ctx context.Context, name, value string) error
	// Lease grants name to holder for ttl, or renews it when holder holds
	// it already, and reports whether holder holds it now: among those
	// sharing the store, one holder at a time, until it releases the lease
	// or lets ttl pass, as when its process dies.
	Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// ReleaseLease ends holder's lease of name, if it holds it, so that
	// another holder need not wait for it to expire.
	ReleaseLease(ctx context.Context, name, holder string) error
}

// History is the retained messages of one room, and the way they reach the
// room: every message, appended here or by another process sharing the
// store, is delivered by Catch, in order, through one path. The Manager
// serialises calls on one History, but for Read and Sync, so
// implementations need no locking of their own for the others.
type History interface {
	// Epoch names this incarnation of the room's sequence; it is the first
	// part of every id.
	Epoch() string
	// Last is the sequence number of the newest message delivered, 0 if
	// none: Catch advances it, and so may Finish for a history that no
	// other process appends to.
	Last() uint64
	// Oldest is the sequence number of the oldest retained message, or
	// Last()+1 when none is retained.
	Oldest() uint64
	// Start begins to append the entries' messages, with the room
	// locked, and returns the call, which the Manager waits for with the
	// room released and then finishes with the room locked again, the
	// same way whatever the backend: a log on disk may write in Start, a
	// store across a network waits for its answer in Wait, so that the
	// room's readers and next batches do not wait for it. The Manager
	// hands over at once the submits that queued up while the room was
	// busy, so that a durable backend writes them with one commit.
	Start(ctx context.Context, entries []Entry) Call
	// Depth is how many calls the Manager may have under way at once:
	// 1 for a history that names each message's sequence number as it
	// stores it; more for one whose store names them in its answers, so
	// that the submits that come during a round trip go out at once.
	// Batches under way together are stored in whatever order the store
	// takes them, and Catch delivers them in that order. A batch is
	// decided before those under way are stored: the Manager reserves
	// the names their verified posts claim, and the history decides the
	// idempotency keys as it stores (see Entry.Outcome).
	Depth() int
	// Read returns up to limit retained messages with sequence numbers in
	// (after, upto], oldest first, where after is at least Oldest()-1 and
	// upto at most Last() as the caller saw them. Unlike the other
	// methods, it runs without the room's lock, at the same time as any
	// of them: a reader waits for the store with the room released, so
	// that no submit waits for a reader's round trip. Messages trimmed
	// since the caller looked are not returned.
	Read(ctx context.Context, after, upto uint64, limit int) ([]Message, error)
	// Resize changes how many messages are kept, dropping the oldest ones
	// that no longer fit.
	Resize(ctx context.Context, capacity int) error
	// Drop deletes the history, in every process: the room was deleted.
	Drop(ctx context.Context) error
	// Expire lets the history go when the room was idle in this
	// process, or made by a stream and left with nothing posted here: a
	// history that only this process keeps is dropped; one that the
	// store expires itself (see Store.SetIdleTimeout) is closed.
	Expire(ctx context.Context) error
	// Close releases the history and keeps what it stored: the process
	// is stopping, and a durable backend gives the room back on the next
	// Open.
	Close() error

	// Follow gives the History the function to call, from any goroutine
	// and without locks held, when it has news for Catch that no call
	// of this process brought: messages appended elsewhere, or the room
	// deleted elsewhere. The Manager calls it once, after Open.
	Follow(notify func())
	// Catch returns, oldest first, the messages after Last that are
	// stored, by this process or another, and advances Last past them;
	// gone is set when the room was deleted elsewhere. It asks the store
	// nothing while the room is held: nothing is skipped, but a History
	// may return only the messages before a gap, read the gap in the
	// background, and notify when the rest is ready.
	Catch() (msgs []Message, gone bool)
	// Sync reads from the store what this process has not heard of yet,
	// for the next Catch: a message acknowledged on another node a moment
	// ago. Like Read, it runs without the room's lock. On error the next
	// Catch delivers what was heard, and no more.
	Sync(ctx context.Context) error

	// Lookup returns the entry stored under seq, in the epoch the
	// caller saw, with its Author, as Read does without the room's
	// lock; found is false when the history no longer holds it.
	Lookup(ctx context.Context, seq uint64) (m Message, found bool, err error)

	// Recall returns what k was first used for in this room within the
	// key window, as the history keeps it, so that a retry is recognised
	// after a restart or on another node when the store keeps keys there;
	// Seq is 0 when it is unknown. m carries the retry's user, text and
	// verification, for Recalled.Same. Like Read, it runs without the
	// room's lock: a keyed submit looks its key up before it queues, so
	// that a retry is answered before any limit is taken, and the
	// history decides the key again as it stores.
	Recall(ctx context.Context, k Key, m Message) (Recalled, error)
}

// Entry is a message or an action to append, with the idempotency key it
// was posted with, zero for none. A history decides the key as it stores
// the batch, at once with the keys of every other process sharing the
// store, and says what it decided in Outcome.
//
// An action is decided and applied as it is stored, in the same write:
// it is stored only while its target is a message the history holds, not
// deleted, and storing it rewrites the target, an edit with the new text
// and its Edited time, a delete as a tombstone (Message.Deleted) whose
// text, and that of the edits of it, is gone from the store itself.
type Entry struct {
	Message Message
	Key     Key
	// Outcome is set by Call.Finish.
	Outcome Outcome
}

// Outcome is what became of an Entry.
type Outcome uint8

// The outcomes of an Entry.
const (
	// Stored: the message is stored under Message.ID.
	Stored Outcome = iota
	// Repeated: Key was used first, within the key window, for a message
	// of the same user, text and verification; nothing was stored, and
	// Message.ID and Message.Time are that first message's.
	Repeated
	// KeyReused: Key was used first for another message; nothing was
	// stored.
	KeyReused
	// NoTarget: the entry is an action whose target the history does
	// not hold as a message, or holds deleted; nothing was stored.
	NoTarget
)

// Decide sets e's Outcome from what its key was first used for, rec, in
// the room's epoch, and reports whether e is to be stored: the key is
// unknown in that epoch.
func (e *Entry) Decide(epoch string, rec Recalled) bool {
	switch {
	case rec.Seq == 0 || rec.Epoch != epoch:
		// A key of another epoch names a message of a deleted room: the
		// key is free again.
		e.Outcome = Stored
		return true
	case rec.Same:
		e.Outcome = Repeated
		e.Message.ID, e.Message.Time = FormatID(epoch, rec.Seq), rec.Time.UTC()
	default:
		e.Outcome = KeyReused
	}
	return false
}

// Apply returns m as the action a leaves it, for a store that applies a
// stored action: the target of an edit with the new text and the edit's
// time; the target of a delete, and each edit of it, erased (Deleted,
// without text). Other entries are returned as they are.
func Apply(m, a Message) Message {
	switch {
	case a.Action == ActionEdit && m.ID == a.Target:
		m.Message, m.Edited = a.Message, a.Time
	case a.Action == ActionDelete && (m.ID == a.Target || m.Action == ActionEdit && m.Target == a.Target):
		m.Message, m.Deleted = "", true
	}
	return m
}

// Key is the idempotency key a message was posted with: Name as sent by
// the author that Scope names.
type Key struct {
	Scope, Name string
}

// Call is an append begun by History.Start. When Finish returns nil, the
// entries' messages are stored as durably as the backend promises, each
// entry has its Outcome and, stored, the id it is stored under
// (Entry.Message.ID), and the next Catch delivers them; when it fails,
// nothing of them is stored.
type Call interface {
	// Wait waits for the store's answer, with the room released. It
	// touches nothing that the History's other methods use.
	Wait(ctx context.Context)
	// Finish takes the answer into the History and the entries, with the
	// room locked again.
	Finish() error
}

// Append stores entries in h at once, for a caller that holds h alone,
// such as a backend's test or a tool that fills a store.
func Append(ctx context.Context, h History, entries []Entry) error {
	c := h.Start(ctx, entries)
	c.Wait(ctx)
	return c.Finish()
}

// Recalled is what an idempotency key was first used for: the message
// stored under Seq in Epoch.
type Recalled struct {
	Epoch string
	Seq   uint64
	Time  time.Time
	// Same is set when the message was posted with the retry's user, text
	// and verification.
	Same bool
}

// lastEpoch makes epochs unique within the process even when rooms are
// recreated within the same microsecond.
var lastEpoch atomic.Int64

// NewEpoch returns the current time in microseconds, base 36: short,
// URL-safe, different after a restart, and never the same twice in one
// process. A Store names a room's new sequence with it.
func NewEpoch() string {
	now := time.Now().UnixMicro()
	for {
		last := lastEpoch.Load()
		next := max(now, last+1)
		if lastEpoch.CompareAndSwap(last, next) {
			return strconv.FormatInt(next, 36)
		}
	}
}

// Appended is what a history that no other process appends to has for
// Catch: the messages its calls stored since the last Catch. Such a
// history adds each call's entries to it and has Catch Take them.
type Appended struct {
	msgs []Message
}

// Add keeps the messages of the stored entries for the next Take.
func (c *Appended) Add(entries []Entry) {
	for _, e := range entries {
		if e.Outcome == Stored {
			c.msgs = append(c.msgs, e.Message)
		}
	}
}

// Take returns the messages added since the last Take. They are the
// caller's until the next Add: the slice is reused.
func (c *Appended) Take() []Message {
	msgs := c.msgs
	c.msgs = c.msgs[:0]
	return msgs
}
