// Package rooms manages chat rooms: their names, message ids, history,
// subscribers and limits. It knows nothing of Caddy or HTTP, so any Go
// program can embed it.
//
// Every room has its own lock; the Manager's lock guards only the map of
// rooms. Nothing serialises all rooms, and a submit never waits for a reader:
// each room makes a message's event once and hands it to its
// broadcast.Broadcaster, which evicts subscribers that fall behind. Submits
// that arrive while a room stores queue and are stored together, so that a
// durable Store (package filestore) commits a burst at once.
package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-chat/caddy-chat/broadcast"
)

// Errors returned by the Manager. Callers map them to responses.
var (
	ErrInvalidName        = errors.New("invalid room name: use 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
	ErrNotFound           = errors.New("no such room")
	ErrTooManyRooms       = errors.New("too many rooms")
	ErrTooManySubscribers = errors.New("too many subscribers")
	ErrClosed             = errors.New("room manager closed")
	// ErrKeyReused refuses a submit whose idempotency key its author used,
	// within the window, for another user or text in the same room.
	ErrKeyReused = errors.New("idempotency key already used for another message")
	// ErrNameReserved refuses an unverified post, under Post.ReserveNames,
	// that claims a name a verified author has posted under in the room.
	ErrNameReserved = errors.New("this name belongs to a verified user of the room")
	// ErrNoMessage refuses an action on a message the room does not hold:
	// an unknown id, one trimmed from the history, an action's, or a
	// message deleted already.
	ErrNoMessage = errors.New("no such message")
	// ErrUnavailable wraps a Store's failure: nothing was stored, and
	// trying again later may succeed.
	ErrUnavailable = errors.New("history store unavailable")
)

// Errors a Subscription ends with.
var (
	// ErrEvicted ends a subscription that fell behind by more than its
	// buffer; resuming from its last id replays what it missed.
	ErrEvicted = broadcast.ErrEvicted
	// ErrRoomClosed ends the subscriptions of a deleted room.
	ErrRoomClosed = errors.New("room closed")
	// ErrExpired ends a subscription that its reader may no longer read
	// (see Subscription.Expire).
	ErrExpired = errors.New("the reader's grant expired")
)

// Config sets a Manager's limits. The zero value means: no history, a
// one-event buffer, no limits, rooms never dropped, memory storage, and the
// default idempotency window, key budget, names and bans per room.
type Config struct {
	History        int           // messages kept per room for replay
	Buffer         int           // events queued per subscriber before it is evicted
	MaxRooms       int           // 0 = unlimited
	MaxSubscribers int           // across all rooms; 0 = unlimited
	IdleTimeout    time.Duration // drop a room this long without subscribers or messages; 0 = never
	// MaxReplayBytes bounds the JSON of the messages of one replay (each
	// wire format adds a few bytes per message); a replay cut there says
	// so (Replay.Truncated). It always holds at least one
	// message. 0 = unlimited.
	MaxReplayBytes int
	KeyWindow      time.Duration // how long an idempotency key is remembered; 0 = DefaultKeyWindow
	MaxKeys        int           // idempotency keys remembered across all rooms; 0 = DefaultMaxKeys
	MaxNames       int           // verified authors' names remembered per room; 0 = DefaultMaxNames
	MaxBans        int           // bans in force per room; 0 = DefaultMaxBans
	Store          Store         // where histories live; nil = NewMemoryStore()
	// StoreTimeout bounds each call the Manager makes to the Store, so
	// that a store that accepts a request and never answers fails it with
	// ErrUnavailable instead of holding up the room. 0 = no bound.
	StoreTimeout time.Duration
	Hooks        Hooks // what to tell the embedding program
}

// Hooks are called as rooms and subscribers come and go, for logs,
// metrics and webhooks. Any of them may be nil. They run with a room's
// lock held, so they must be quick and must not call back into the
// Manager.
type Hooks struct {
	RoomCreated func(room string)
	RoomDropped func(room string, reason string) // "deleted", "idle", "unused" or "closed"
	// Published is called for each entry of a room's log as the room
	// delivers it, stored here or by another process: a message, an edit
	// or a delete (see Manager.Entries).
	Published func(room string, deliveries int)
	Evicted   func(room string)
	// Presence is called with each presence event of a room: who joined
	// and left, coalesced as its streams see them (PresenceInterval).
	Presence func(room string, change PresenceChange)
	// Banned is called with each ban put in force by this process.
	Banned func(b Ban)
}

// Manager holds the rooms. Its methods are safe for concurrent use.
type Manager struct {
	mu     sync.RWMutex
	rooms  map[string]*room
	cfg    atomic.Pointer[Config]
	closed bool

	subscribers atomic.Int64
	// others is who follows each room in the other processes, when the
	// Store is a Census, and directory the rooms a Directory store holds,
	// as the census last read them, at the latest a second after listed
	// (unix nanoseconds of the last listing); censusDone is closed when its
	// exchanges stop.
	others     atomic.Pointer[map[string]Headcount]
	directory  atomic.Pointer[map[string]string]
	listed     atomic.Int64
	censusDone chan struct{}
	// opening holds the rooms whose history the Store is opening, outside
	// mu: a store that is slow to answer holds up the first callers of
	// that room, who share the one Open, and no one else. releasing holds
	// the dropped rooms whose history is being released, also outside mu,
	// each until it is done (releasingMu, taken with no other lock after
	// it).
	opening     map[string]*opening
	releasingMu sync.Mutex
	releasing   map[string]chan struct{}
	// delivering counts the goroutines that hand a history's news
	// to its room; Close waits for them, and none starts once it has
	// begun (deliveringMu, deliveringDone).
	delivering     sync.WaitGroup
	deliveringMu   sync.Mutex
	deliveringDone bool

	stopJanitor chan struct{}
	janitorDone chan struct{}
	// reconfigured wakes the janitor, so that a shorter idle timeout
	// applies at once rather than after the old interval.
	reconfigured chan struct{}
}

// Open returns a Manager with cfg's limits, holding the rooms that cfg.Store
// kept (Store.Kept), and starts its idle-room sweeper. A room
// taken back counts as active at the time of its newest message, so that
// the idle sweep drops it as if there had been no restart, and reserves the
// names its kept messages were verified under. Call Close when done with
// it.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	m := New(cfg)
	names, err := m.config().Store.Kept(ctx)
	if err == nil {
		err = m.restore(ctx, names)
	}
	if err != nil {
		return nil, errors.Join(err, m.Close())
	}
	return m, nil
}

// restore takes back the named rooms from the store.
func (m *Manager) restore(ctx context.Context, names []string) error {
	cfg := m.config()
	for _, name := range names {
		h, err := cfg.Store.Open(ctx, name, cfg.History)
		if err != nil {
			return fmt.Errorf("opening history of room %q: %w", name, err)
		}
		kept, err := h.Read(ctx, h.Oldest()-1, h.Last(), cfg.History)
		if err != nil {
			return errors.Join(fmt.Errorf("reading history of room %q: %w", name, err), h.Close())
		}
		r := m.newRoom(name, h, kept)
		if n := len(kept); n > 0 {
			r.lastActive = kept[n-1].Time
		}
		m.mu.Lock()
		m.rooms[name] = r
		m.mu.Unlock()
	}
	return nil
}

// New returns a Manager with cfg's limits and starts its idle-room sweeper.
// It takes back no room from cfg.Store: see Open. Call Close when done with
// it.
func New(cfg Config) *Manager {
	m := &Manager{
		rooms:        make(map[string]*room),
		opening:      make(map[string]*opening),
		releasing:    make(map[string]chan struct{}),
		stopJanitor:  make(chan struct{}),
		janitorDone:  make(chan struct{}),
		reconfigured: make(chan struct{}, 1),
	}
	m.Configure(cfg)
	go m.janitor()
	if c, ok := m.config().Store.(Census); ok {
		m.censusDone = make(chan struct{})
		go m.census(c)
	}
	return m
}

// Configure applies new limits. Existing rooms resize their history when
// its size changed; buffers of existing subscribers keep their size. The
// Store cannot be changed.
func (m *Manager) Configure(cfg Config) {
	if cfg.KeyWindow <= 0 {
		cfg.KeyWindow = DefaultKeyWindow
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.MaxNames <= 0 {
		cfg.MaxNames = DefaultMaxNames
	}
	if cfg.MaxBans <= 0 {
		cfg.MaxBans = DefaultMaxBans
	}
	old := m.cfg.Load()
	if old != nil {
		cfg.Store = old.Store
	} else if cfg.Store == nil {
		cfg.Store = NewMemoryStore()
	}
	m.cfg.Store(&cfg)
	cfg.Store.SetIdleTimeout(cfg.IdleTimeout)
	cfg.Store.SetKeyWindow(cfg.KeyWindow, cfg.MaxKeys)
	select {
	case m.reconfigured <- struct{}{}:
	default: // the janitor has a wake-up pending already
	}
	if old == nil || old.History == cfg.History {
		return
	}
	for _, r := range m.snapshot() {
		r.mu.Lock()
		if !r.closed {
			ctx, cancel := m.storeContext()
			_ = r.history.Resize(ctx, cfg.History)
			cancel()
		}
		r.mu.Unlock()
	}
}

func (m *Manager) config() *Config { return m.cfg.Load() }

// storeContext returns the context of one call to the Store, bounded by
// StoreTimeout.
func (m *Manager) storeContext() (context.Context, context.CancelFunc) {
	return m.storeContextWithin(context.Background())
}

// storeContextWithin is storeContext ending with parent too.
func (m *Manager) storeContextWithin(parent context.Context) (context.Context, context.CancelFunc) {
	if d := m.config().StoreTimeout; d > 0 {
		return context.WithTimeout(parent, d)
	}
	return parent, func() {}
}

// room is one chat room. Its lock orders its messages: a message is stored
// and offered to subscribers under it, and a subscriber registers and reads
// its replay under it, so a replay and the live events after it meet with no
// gap and no overlap.
type room struct {
	name string
	// config is the Manager's config of the moment, for the hooks of a
	// room's own timers.
	config func() *Config

	mu          sync.Mutex
	history     History
	broadcaster *broadcast.Broadcaster[*Event]
	subscribers int
	lastActive  time.Time
	closed      bool
	verified    names
	presence    presence
	others      Headcount // who follows the room in other processes
	// reported is the room's last headcount, for the census, with the
	// position its LastID names.
	reported      Headcount
	reportedLast  uint64
	reportedEpoch string

	// The inbox of submits waiting for a writer of the room (see Submit),
	// and the writers' reused slices. depth is how many batches may be
	// under way at once (History.Depth).
	inboxMu      sync.Mutex
	inbox, spare []*submission
	writers      int
	depth        int
	entries      []Entry       // r.mu
	taken        []*submission // r.mu
	// Batches stored with r.mu released, and the names of their verified
	// posts (see underWay); r.mu.
	storing int
	claimed map[uint64]int

	// posted is set once the room holds a message stored here, or held
	// one when opened: a room that only streams opened goes with them,
	// and the first post that keeps it makes it (see roomFor). It is read
	// without r.mu, so that a submit does not wait for a batch being
	// stored to learn it.
	posted atomic.Bool

	// A history's news is delivered by one goroutine at a time,
	// started when there is some (see follow).
	newsMu         sync.Mutex
	catching, news bool
}

func (r *room) lastID() string {
	if r.history.Last() == 0 {
		return ""
	}
	return FormatID(r.history.Epoch(), r.history.Last())
}

// withRoom runs f on the named room, creating it when create is set, with the
// room's lock held. It retries when the room closes between lookup and lock.
func (m *Manager) withRoom(name string, create bool, f func(*room) error) error {
	if !ValidName(name) {
		return ErrInvalidName
	}
	for {
		m.mu.RLock()
		r, closed := m.rooms[name], m.closed
		m.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		if r == nil {
			if !create {
				return ErrNotFound
			}
			var err error
			if r, err = m.create(name); err != nil {
				return err
			}
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			continue
		}
		err := f(r)
		r.mu.Unlock()
		return err
	}
}

// opening is a room whose history is being opened, and the outcome for
// the callers who wait for it.
type opening struct {
	done chan struct{}
	r    *room
	err  error
}

// create returns the named room, making it if no one else has. The Store
// opens the history without the Manager's lock held: a store that does not
// answer holds up this room's first callers, for at most StoreTimeout, and
// not every other room's lookups.
func (m *Manager) create(name string) (*room, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if r := m.rooms[name]; r != nil {
		m.mu.Unlock()
		return r, nil
	}
	if op := m.opening[name]; op != nil {
		m.mu.Unlock()
		<-op.done
		return op.r, op.err
	}
	cfg := m.config()
	// A room being opened counts against the limit, so that many first
	// subscribers at once cannot pass it.
	if cfg.MaxRooms > 0 && len(m.rooms)+len(m.opening) >= cfg.MaxRooms {
		m.mu.Unlock()
		return nil, ErrTooManyRooms
	}
	op := &opening{done: make(chan struct{})}
	m.opening[name] = op
	m.mu.Unlock()
	defer close(op.done)

	m.released(name)
	ctx, cancel := m.storeContext()
	h, err := cfg.Store.Open(ctx, name, cfg.History)
	var kept []Message
	if err == nil && h.Last() > 0 {
		// Another process made the room: the names its verified authors
		// posted under are reserved here too.
		if kept, err = h.Read(ctx, h.Oldest()-1, h.Last(), cfg.History); err != nil {
			err = errors.Join(fmt.Errorf("reading it: %w", err), h.Close())
		}
	}
	cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.opening, name)
	switch {
	case err != nil:
		op.err = fmt.Errorf("opening history of room %q: %w: %w", name, ErrUnavailable, err)
	case m.closed:
		op.err = errors.Join(ErrClosed, h.Close())
	default:
		op.r = m.newRoom(name, h, kept)
		m.rooms[name] = op.r
		if hook := cfg.Hooks.RoomCreated; hook != nil {
			hook(name)
		}
	}
	return op.r, op.err
}

// newRoom returns a room, active now, keeping its messages in h, of which
// kept are those the store held already: their verified authors' names
// are reserved.
func (m *Manager) newRoom(name string, h History, kept []Message) *room {
	r := &room{name: name, config: m.config, history: h, lastActive: time.Now(), verified: names{}, depth: max(h.Depth(), 1)}
	r.posted.Store(h.Last() > 0)
	for _, msg := range kept {
		r.learnName(msg, m.config().MaxNames)
	}
	r.broadcaster = broadcast.New(func(*broadcast.Subscriber[*Event]) {
		// The config of the moment, not the room's first: a reload's
		// logger reports evictions in rooms older than it.
		if h := m.config().Hooks.Evicted; h != nil {
			h(name)
		}
	})
	r.setOthers(m.othersOf(name))
	h.Follow(func() { m.follow(r) })
	return r
}

// follow delivers a history's news from other processes on a goroutine of
// its own, one per room at a time, which ends when there is no more: the
// history's notice comes from the goroutine that reads every room's news,
// which must not wait for this room's lock, held by a submit that waits for
// the store.
func (m *Manager) follow(r *room) {
	r.newsMu.Lock()
	defer r.newsMu.Unlock()
	if r.catching {
		r.news = true
		return
	}
	r.catching = m.background(func() {
		for {
			r.mu.Lock()
			if !r.closed {
				m.deliver(r)
			}
			r.mu.Unlock()
			r.newsMu.Lock()
			more := r.news
			r.news, r.catching = false, more
			r.newsMu.Unlock()
			if !more {
				return
			}
		}
	})
}

// background runs f on a goroutine that Close waits for, and reports
// whether it did: once Close has begun, it does not.
func (m *Manager) background(f func()) bool {
	m.deliveringMu.Lock()
	defer m.deliveringMu.Unlock()
	if m.deliveringDone {
		return false
	}
	m.delivering.Go(f)
	return true
}

// deliver is the one way into the room of every message, stored here or by
// another process: it hands what the history caught to the room's
// subscribers, in order, and drops the room when it was deleted elsewhere,
// which ends its streams as a local delete would. r.mu must be held.
func (m *Manager) deliver(r *room) {
	epoch, next := r.history.Epoch(), r.history.Last()+1
	msgs, gone := r.history.Catch()
	if !gone && next > 1 && r.history.Epoch() != epoch {
		// The history went on in a new epoch under messages delivered
		// here, as when its store lost the newest of them: the streams
		// that followed the old one end, and resuming they are told the
		// history moved on.
		r.broadcaster.EvictAll()
	}
	// In the same epoch, a sequence number passed over is a message that
	// the store no longer held when this process came to read it: the
	// streams that were owed it are evicted, and resuming they are told
	// the history moved on.
	skipped := func(seq uint64) bool { return seq > next && r.history.Epoch() == epoch }
	hook := m.config().Hooks.Published
	for _, msg := range msgs {
		_, seq, _ := ParseID(msg.ID)
		if skipped(seq) {
			r.broadcaster.EvictAll()
		}
		next = seq + 1
		if msg.Deleted {
			// Read back from the store after a delete erased it:
			// there is nothing left to show, and the delete
			// follows.
			continue
		}
		// A verified post stored by another process reserves its name
		// here as one stored here does.
		r.learnName(msg, m.config().MaxNames)
		delivered := r.broadcaster.Submit(MessageEvent(msg))
		if hook != nil {
			hook(r.name, delivered)
		}
		r.lastActive = time.Now()
	}
	if skipped(r.history.Last() + 1) {
		r.broadcaster.EvictAll()
	}
	if gone {
		// Dropping takes the Manager's lock, which comes before r.mu.
		m.background(func() { m.dropIf(r, "deleted", func(r *room) bool { return !r.closed }) })
	}
}

// learnName reserves the name msg was posted under when its author was
// verified. r.mu must be held, or r not yet reachable.
func (r *room) learnName(msg Message, max int) {
	if msg.Verified && !msg.IsAction() {
		_, seq, _ := ParseID(msg.ID)
		r.verified.add(nameHash(msg.User), seq, max)
	}
}

// Post is a message to submit, with what Submit checks before storing it.
type Post struct {
	User string
	Text string
	// Verified says the embedding program authenticated the author, who
	// is User.
	Verified bool
	// Key is an idempotency key, "" for none. Scope names its author, such
	// as an identity or a client address with a user name: a key is looked
	// up only among the keys of its scope.
	Key, Scope string
	// ReserveNames refuses an unverified post under a name that a verified
	// author has posted under in the room.
	ReserveNames bool
	// Admit, when set, is asked last, once the post is neither a repeat
	// nor refused: a rate limit, so that a repeat of a stored message never
	// counts against it. Its error refuses the post and is returned as is;
	// a post to a room yet to be made is refused before the room is made.
	// It may run with the room's lock held, so it must be quick and must
	// not call back into the Manager.
	Admit func() error
	// Action, when set, makes the post an action on the message whose id
	// is Target rather than a message: for an edit, Text is the new text;
	// ByModerator says a moderator deletes. User and Verified name who
	// acts. It is stored only while the room holds Target as a message,
	// not deleted (else ErrNoMessage), and never makes a room. Key and
	// ReserveNames do not apply to it.
	Action      Action
	Target      string
	ByModerator bool
	// Author is kept with a message, never published (see
	// Message.Author).
	Author Authorship
	// Create, when set, is asked after Admit when the post would make a
	// new room: a limit on how many rooms one client makes. A room that
	// only streams opened is made by the first post that keeps it, which
	// is asked (two such posts at once may both be). A room that another
	// process sharing the store posted to is no new room. Its
	// error refuses the post, and no room is kept.
	Create func() error
}

// Submit posts p to the named room, creating the room if needed, and
// returns the message as stored. With a key that p's scope has used in the
// room within the key window, nothing is stored: with the same user, text
// and verification as the first time, Submit returns the message stored
// then and repeat is true; with others, it returns ErrKeyReused.
//
// A room's submits queue in its inbox while one of them, the writer, stores
// what has queued up with one call to History.Start: with a durable store, the
// submits that arrive during a commit share the next one, and the room's
// lock is held once per batch rather than once per message.
func (m *Manager) Submit(roomName string, p Post) (msg Message, repeat bool, err error) {
	if !ValidName(roomName) {
		return Message{}, false, ErrInvalidName
	}
	if p.Action != 0 {
		if _, _, ok := ParseID(p.Target); !ok {
			return Message{}, false, ErrNoMessage
		}
		if err := m.openElsewhere(roomName); err != nil {
			return Message{}, false, err
		}
		if m.lookup(roomName) == nil {
			return Message{}, false, ErrNotFound
		}
		p.Key, p.ReserveNames, p.Create = "", false, nil
	}
	s := submissions.Get().(*submission)
	*s = submission{p: p}
	// Put back as is: the next Get overwrites it whole.
	defer submissions.Put(s)
	for {
		r, err := m.roomFor(roomName, &s.p)
		if err != nil {
			return Message{}, false, err
		}
		if s.p.Key != "" {
			// Looked up before the room is locked, and before Admit:
			// a retry is answered without counting against a limit.
			if err := m.recall(r, s); err != nil {
				return Message{}, false, err
			}
		}
		r.inboxMu.Lock()
		if r.writers >= r.depth {
			s.done = make(chan struct{})
			r.inbox = append(r.inbox, s)
			r.inboxMu.Unlock()
			<-s.done
			if s.lead {
				m.write(r, nil)
			}
		} else {
			r.writers++
			r.inboxMu.Unlock()
			m.write(r, s)
		}
		if s.err != errRoomGone {
			return s.msg, s.repeat, s.err
		}
		s.err, s.done, s.lead = nil, nil, false
	}
}

// Repeat looks p's idempotency key up in the named room as Submit would,
// across processes with a shared store, and stores nothing: found is set
// when p repeats a stored message, which msg is, and err is ErrKeyReused
// when the key was used for another. Admit and Create are not asked: a
// caller whose limit is a round trip takes it between Repeat and Submit,
// outside the room's lock, and answers a repeat without counting it.
func (m *Manager) Repeat(roomName string, p Post) (msg Message, found bool, err error) {
	if p.Key == "" {
		return Message{}, false, nil
	}
	if err := m.openElsewhere(roomName); err != nil {
		return Message{}, false, err
	}
	r := m.lookup(roomName)
	if r == nil {
		return Message{}, false, nil
	}
	s := &submission{p: p}
	if err := m.recall(r, s); err != nil {
		return Message{}, false, err
	}
	err = m.withRoom(roomName, false, func(r *room) error {
		found = r.repeated(s, nil)
		return s.err
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return Message{}, false, nil
	case err != nil:
		return Message{}, false, err
	}
	return s.msg, found, nil
}

// submission is a Submit in a room's inbox, and its outcome.
type submission struct {
	p      Post
	msg    Message
	repeat bool
	err    error
	done   chan struct{} // closed by the writer; nil for the writer's own
	lead   bool          // set with done: take over as the room's writer

	rec  Recalled    // what p.Key was first used for, as recall found it
	name uint64      // hash of p.User
	of   *submission // the submission of the same batch whose key this repeats
}

// submissions keeps submissions for reuse: a submit allocates no more than
// before rooms had an inbox.
var submissions = sync.Pool{New: func() any { return new(submission) }}

// errRoomGone sends a submission back to look up its room again: the room
// closed before the writer took the submission.
var errRoomGone = errors.New("room closed before the submit was stored")

// roomFor returns the named room, making it when there is none. The post
// makes the room when it is the first to keep it (see room.posted): when
// no room is open, or only streams opened it. Such a room holds no key and no
// name: only Admit and then Create can refuse the post, and asked first,
// their refusal leaves no room behind that the post would have kept; they
// are not asked again.
func (m *Manager) roomFor(name string, p *Post) (*room, error) {
	m.mu.RLock()
	r, closed := m.rooms[name], m.closed
	m.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if r != nil && (p.Create == nil || r.posted.Load()) {
		return r, nil
	}
	if p.Create != nil {
		// A room that another process posted to is no new room of this
		// client's, and may hold its keys: Admit waits for the lookup.
		held, err := m.heldElsewhere(name)
		if err != nil {
			return nil, err
		}
		if held {
			p.Create = nil
			if r != nil {
				return r, nil
			}
			return m.create(name)
		}
	}
	if p.Admit != nil {
		if err := p.Admit(); err != nil {
			return nil, err
		}
		p.Admit = nil
	}
	if p.Create != nil {
		if err := p.Create(); err != nil {
			return nil, err
		}
		p.Create = nil
	}
	if r != nil {
		return r, nil
	}
	return m.create(name)
}

// lookup returns the named room, or nil when it is not open.
func (m *Manager) lookup(name string) *room {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rooms[name]
}

// write stores s, unless it is nil, then one batch of what queued in r's
// inbox meanwhile, and wakes that batch's submitters. When more has queued
// since, the last of them takes over as a writer: no submitter stores more
// than its own post and one batch before it answers.
func (m *Manager) write(r *room, s *submission) {
	if s != nil {
		m.store(r, []*submission{s})
	}
	r.inboxMu.Lock()
	if len(r.inbox) == 0 {
		r.writers--
		r.inboxMu.Unlock()
		return
	}
	// Submits that come while this batch is stored queue in the other
	// slice: the two take turns, so that with one writer none is
	// allocated anew.
	batch := r.inbox
	r.inbox, r.spare = r.spare, nil
	r.inboxMu.Unlock()
	m.store(r, batch)
	r.inboxMu.Lock()
	handOff := len(r.inbox) > 0
	if !handOff {
		r.writers--
	}
	r.inboxMu.Unlock()
	batch[len(batch)-1].lead = handOff
	for _, q := range batch {
		close(q.done)
	}
	r.inboxMu.Lock()
	clear(batch)
	if r.spare == nil {
		r.spare = batch[:0]
	}
	r.inboxMu.Unlock()
}

// store decides each submission of batch, in order, stores the new messages
// with one call to the history and publishes them, with r.mu held but while
// the call waits for the store: the room's readers go on meanwhile, and so
// do its next batches when the history's Depth lets them.
func (m *Manager) store(r *room, batch []*submission) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		for _, s := range batch {
			s.err = errRoomGone
		}
		return
	}
	cfg := m.config()
	now := time.Now()
	entries, taken := r.entries[:0], r.taken[:0]
	if r.depth > 1 {
		// Other batches use the room's slices while this one is
		// stored.
		entries, taken = nil, nil
	} else {
		defer func() {
			clear(entries)
			clear(taken)
			r.entries, r.taken = entries[:0], taken[:0]
		}()
	}
	for _, s := range batch {
		p := &s.p
		if p.Key != "" && r.repeated(s, taken) {
			continue
		}
		s.name = nameHash(p.User)
		if p.ReserveNames && p.Action == 0 && !p.Verified && (r.verified.has(s.name) || r.claimed[s.name] > 0 || slices.ContainsFunc(taken, func(t *submission) bool {
			return t.p.Verified && t.name == s.name
		})) {
			s.err = ErrNameReserved
			continue
		}
		if p.Admit != nil {
			if err := p.Admit(); err != nil {
				s.err = err
				continue
			}
		}
		s.msg = Message{
			Room:     r.name,
			User:     p.User,
			Message:  p.Text,
			Time:     now.UTC().Truncate(time.Millisecond),
			Verified: p.Verified,

			Action:      p.Action,
			Target:      p.Target,
			ByModerator: p.ByModerator,
			Author:      p.Author,
		}
		entries = append(entries, Entry{Message: s.msg, Key: Key{Scope: p.Scope, Name: p.Key}})
		taken = append(taken, s)
	}
	if len(entries) > 0 {
		err := m.append(r, entries, taken)
		if err != nil {
			err = fmt.Errorf("storing message in room %q: %w: %w", r.name, ErrUnavailable, err)
			for _, s := range taken {
				s.msg, s.err = Message{}, err
			}
			for _, s := range batch {
				if s.of != nil {
					s.repeat, s.err = false, err
				}
			}
			return
		}
		r.posted.Store(true)
		for i, s := range taken {
			switch entries[i].Outcome {
			case Repeated:
				s.msg.ID, s.msg.Time, s.repeat = entries[i].Message.ID, entries[i].Message.Time, true
				continue
			case KeyReused:
				s.msg, s.err = Message{}, ErrKeyReused
				continue
			case NoTarget:
				s.msg, s.err = Message{}, ErrNoMessage
				continue
			}
			s.msg.ID = entries[i].Message.ID
			_, seq, _ := ParseID(s.msg.ID)
			if s.p.Verified && s.p.Action == 0 {
				r.verified.add(s.name, seq, cfg.MaxNames)
			}
		}
		// A room closed while the batch was stored has no one left to
		// deliver to.
		if !r.closed {
			m.deliver(r)
		}
		r.lastActive = now
	}
	for _, s := range batch {
		if s.of != nil {
			// The history may have found the first of the batch a
			// repeat or a reuse too.
			s.msg, s.err = s.of.msg, s.of.err
			s.repeat = s.err == nil
		}
	}
}

// append stores entries, those of taken, in r's history, with r.mu
// released while the store answers. r.mu must be held.
func (m *Manager) append(r *room, entries []Entry, taken []*submission) error {
	ctx, cancel := m.storeContext()
	defer cancel()
	call := r.history.Start(ctx, entries)
	r.underWay(taken, 1)
	r.mu.Unlock()
	call.Wait(ctx)
	r.mu.Lock()
	r.underWay(taken, -1)
	return call.Finish()
}

// underWay counts taken's batch, by n, as stored with r.mu released: the
// idle sweep leaves the room be meanwhile, and the names of the batch's
// verified posts are reserved against later batches, as they will be once
// stored. r.mu must be held.
func (r *room) underWay(taken []*submission, n int) {
	r.storing += n
	for _, s := range taken {
		if !s.p.Verified {
			continue
		}
		if r.claimed == nil {
			r.claimed = make(map[uint64]int)
		}
		if r.claimed[s.name] += n; r.claimed[s.name] == 0 {
			delete(r.claimed, s.name)
		}
	}
}

// recall looks s's key up in r's history with the room released, for
// repeated to decide with the room locked, and returns the error of a
// store that could not answer.
func (m *Manager) recall(r *room, s *submission) error {
	p := &s.p
	ctx, cancel := m.storeContext()
	defer cancel()
	rec, err := r.history.Recall(ctx, Key{Scope: p.Scope, Name: p.Key}, Message{User: p.User, Message: p.Text, Verified: p.Verified})
	if err != nil {
		return fmt.Errorf("looking up an idempotency key in room %q: %w: %w", r.name, ErrUnavailable, err)
	}
	s.rec = rec
	return nil
}

// repeated reports whether s's key was used in the room within the key
// window: by a message stored before, as recall found it, or by one
// taken earlier in the same batch. It then sets s's outcome: the message
// stored then, or ErrKeyReused. A key first used while s waited to be
// stored is decided by the history as it stores the batch. r.mu must be
// held.
func (r *room) repeated(s *submission, taken []*submission) bool {
	p := &s.p
	e := Entry{Message: Message{Room: r.name, User: p.User, Message: p.Text, Verified: p.Verified}}
	if !e.Decide(r.history.Epoch(), s.rec) {
		if e.Outcome == KeyReused {
			s.err = ErrKeyReused
			return true
		}
		s.msg, s.repeat = e.Message, true
		return true
	}
	for _, t := range taken {
		if t.p.Key == p.Key && t.p.Scope == p.Scope {
			if t.p.User != p.User || t.p.Text != p.Text || t.p.Verified != p.Verified {
				s.err = ErrKeyReused
			} else {
				s.of, s.repeat = t, true
			}
			return true
		}
	}
	return false
}

// Position says where a new subscription starts: after the message with id
// LastEventID when it is set, else with the newest History messages.
//
// User names the subscriber in the room's presence ("" counts it as
// anonymous), and WatchPresence has the subscription receive presence
// events: first the users already announced, then who joins and leaves.
type Position struct {
	LastEventID   string
	History       int
	User          string
	WatchPresence bool
	// UserVerified says the embedding program authenticated User. An
	// unverified User that a verified author has posted under in the room
	// counts as anonymous when ReserveNames is set, as its post would be
	// refused.
	UserVerified, ReserveNames bool
}

// Replay is what a subscriber receives before live messages.
type Replay struct {
	// Messages are the messages, as their edits and deletes left them,
	// but those deletes erased; in a subscription's replay, the actions
	// since its position are among them, in order, as its Events have
	// them.
	Messages []Message
	// Events is what a Subscription's stream starts with: a reset event
	// when Reset is set, then the events of Messages, whose JSON fit made
	// while it measured them. It is nil in the answer of Messages.
	Events []*Event
	// Reset is set when the position could not be honoured exactly: the id
	// is foreign (another epoch, malformed) or older than the history
	// holds. Messages then holds everything retained, and Oldest is its
	// first id ("" when nothing is retained).
	Reset  bool
	Oldest string
	// Truncated is set when Messages stops short of what was asked for
	// because the replay reached MaxReplayBytes: like a lost position, the
	// reader must come back after the last message it got for the rest. A
	// stream ends after writing such a replay.
	Truncated bool
	// Start is set, in the answer of Messages, when nothing older than
	// Messages is kept: a reader paging back with before has reached the
	// start of the history.
	Start bool
}

// minMessageSize is less than the JSON of the smallest message: the
// messages of budget/minMessageSize+1 pass a replay budget, so a copy of one
// more than that is sure to be cut, and flagged, by fit.
const minMessageSize = 64

// span is the part of a room's history that a replay reads: up to take
// messages in (after, upto], with ids in epoch. resume is set when the
// reader named the message it has, and Reset and Oldest say what the
// replay says when the position could not be honoured.
type span struct {
	epoch         string
	after, upto   uint64
	floor         uint64 // Oldest()-1 as planned
	take          int
	resume, reset bool
	oldest        string
	// newest is set when the span is the newest take messages up to
	// upto, older than a position: a budget keeps the newest of them.
	newest bool
}

// before cuts sp at the message with id before, as of h: it keeps the
// messages older than it, the newest of them when newest is set. r.mu
// must be held.
func (sp span) before(h History, before string, newest bool) span {
	epoch, seq, ok := ParseID(before)
	if !ok || epoch != h.Epoch() || seq == 0 || seq > h.Last()+1 {
		sp.take, sp.resume, sp.reset, sp.oldest = 0, false, true, ""
		if h.Oldest() <= h.Last() {
			sp.oldest = FormatID(h.Epoch(), h.Oldest())
		}
		return sp
	}
	sp.upto = min(sp.upto, seq-1)
	if newest {
		sp.after = max(h.Oldest()-1, sp.upto-min(uint64(sp.take), sp.upto))
		sp.newest = true
	}
	return sp
}

// plan answers "what follows pos?" from the room's position, up to limit
// messages, and no more than a budget of bytes can hold: which messages
// its replay reads once the room is released. r.mu must be held.
func (r *room) plan(pos Position, limit, budget int) span {
	h := r.history
	sp := span{epoch: h.Epoch(), after: h.Oldest() - 1, floor: h.Oldest() - 1, upto: h.Last(), take: limit}
	// Copy no more messages than the budget can hold: fit cuts the rest.
	if budget > 0 {
		sp.take = min(sp.take, budget/minMessageSize+2)
	}
	if pos.LastEventID == "" {
		n := min(pos.History, limit)
		sp.after = max(sp.after, h.Last()-min(uint64(n), h.Last()))
		sp.take = min(n, sp.take)
		return sp
	}
	epoch, seq, ok := ParseID(pos.LastEventID)
	if ok && epoch == h.Epoch() && seq <= h.Last() && seq+1 >= h.Oldest() {
		sp.after, sp.resume = seq, true
		return sp
	}
	sp.reset = true
	if h.Oldest() <= h.Last() {
		sp.oldest = FormatID(h.Epoch(), h.Oldest())
	}
	return sp
}

// read reads sp from h, with the room released: what came after sp.upto
// reaches the reader live. A resumed reader whose next message was trimmed
// meanwhile, by messages stored since plan, is told so as when its
// position was older than the history.
func (sp span) read(ctx context.Context, h History) (Replay, error) {
	if sp.take <= 0 || sp.after >= sp.upto {
		return Replay{Reset: sp.reset, Oldest: sp.oldest}, nil
	}
	msgs, err := h.Read(ctx, sp.after, sp.upto, sp.take)
	if err != nil {
		return Replay{}, err
	}
	rep := Replay{Messages: msgs, Reset: sp.reset, Oldest: sp.oldest}
	if sp.resume && (len(msgs) == 0 || msgs[0].ID != FormatID(sp.epoch, sp.after+1)) {
		rep.Reset, rep.Oldest = true, ""
	}
	if rep.Reset && len(msgs) > 0 {
		rep.Oldest = msgs[0].ID
	}
	return rep, nil
}

// readMessages reads sp from h as Messages answers it, the room as it
// now stands: actions, and the messages deletes erased, are left out, and
// the read goes on past them, back towards the oldest when back is set,
// until it has sp.take messages or the span ends, so that a page is short
// only at the end of history.
func (sp span) readMessages(ctx context.Context, h History, back bool) (Replay, error) {
	rep, err := sp.read(ctx, h)
	if err != nil || len(rep.Messages) == 0 {
		return rep, err
	}
	want, got := sp.take, rep.Messages
	lo, hi := seqOf(got[0]), seqOf(got[len(got)-1])
	more := len(got) == sp.take
	msgs := shown(got)
	for more && len(msgs) < want {
		n := want - len(msgs)
		if back && lo > sp.floor+1 {
			got, err = h.Read(ctx, max(sp.floor, lo-1-min(uint64(n), lo-1)), lo-1, n)
		} else if !back && hi < sp.upto {
			got, err = h.Read(ctx, hi, sp.upto, n)
		} else {
			break
		}
		if err != nil {
			return Replay{}, err
		}
		if len(got) == 0 {
			break
		}
		more = len(got) == n
		if back {
			lo, msgs = seqOf(got[0]), append(shown(got), msgs...)
		} else {
			hi, msgs = seqOf(got[len(got)-1]), append(msgs, shown(got)...)
		}
	}
	rep.Messages = msgs
	return rep, nil
}

// shown is what history shows of entries, which it may reuse: the
// messages, but those deletes erased.
func shown(entries []Message) []Message {
	return slices.DeleteFunc(entries, func(m Message) bool { return m.IsAction() || m.Deleted })
}

func seqOf(m Message) uint64 {
	_, seq, _ := ParseID(m.ID)
	return seq
}

// reading runs f on the named room with its lock held, as withRoom does,
// once its history has heard of every message stored before the call: a
// message acknowledged on another node a moment ago, which the reader may
// have seen there, is never missing here. The store is read (Sync) with
// the room released, then its news delivered under the lock. A reader
// that resumes from a message this process has heard of needs no read:
// what follows reaches its stream live, in order.
func (m *Manager) reading(roomName string, create bool, pos Position, f func(*room) error) error {
	var behind, synced *room
	for {
		err := m.withRoom(roomName, create, func(r *room) error {
			if pos.LastEventID == "" && pos.History == 0 {
				return f(r)
			}
			if epoch, seq, ok := ParseID(pos.LastEventID); ok && pos.History == 0 && epoch == r.history.Epoch() && seq <= r.history.Last() {
				return f(r)
			}
			if r != synced {
				behind = r
				return errBehind
			}
			m.deliver(r)
			return f(r)
		})
		if !errors.Is(err, errBehind) {
			return err
		}
		ctx, cancel := m.storeContext()
		// A failed read leaves the reader with what this process heard,
		// as a node cut off from the store serves it.
		_ = behind.history.Sync(ctx)
		cancel()
		synced = behind
	}
}

// errBehind sends a reader out of its room to read its store first.
var errBehind = errors.New("the room has to hear from its store first")

// fit encodes the replay's messages as JSON until they would pass budget
// bytes, keeping at least one message, and cuts Messages there. With
// events, it makes the stream's start in Events, whose messages keep the
// JSON made here, so that a stream does not encode them again. It runs
// outside the room's lock: encoding a large replay must not hold up the
// room's submits.
func (rep *Replay) fit(budget int, events bool) {
	if events {
		rep.Events = make([]*Event, 0, len(rep.Messages)+1)
		if rep.Reset {
			rep.Events = append(rep.Events, &Event{Kind: EventReset, Oldest: rep.Oldest})
		}
	}
	total := 0
	for i, msg := range rep.Messages {
		var size int
		ev := MessageEvent(msg)
		if events {
			size = len(ev.JSON())
		} else {
			b, _ := msg.MarshalJSON() // cannot fail: strings, a time and a bool
			size = len(b)
		}
		if budget > 0 && i > 0 && total+size > budget {
			rep.Messages = rep.Messages[:i]
			rep.Truncated = true
			break
		}
		total += size
		if events {
			rep.Events = append(rep.Events, ev)
		}
	}
}

// fitNewest cuts Messages, from the oldest, to the newest that budget
// bytes of JSON hold, keeping at least one, as fit does from the front.
func (rep *Replay) fitNewest(budget int) {
	if budget <= 0 {
		return
	}
	total := 0
	for i := len(rep.Messages) - 1; i >= 0; i-- {
		b, _ := rep.Messages[i].MarshalJSON() // cannot fail: strings, a time and a bool
		if i < len(rep.Messages)-1 && total+len(b) > budget {
			rep.Messages = rep.Messages[i+1:]
			rep.Truncated = true
			return
		}
		total += len(b)
	}
}

// Subscription is one reader of a room: the replay it starts with, then live
// events. Call Close when done.
type Subscription struct {
	Replay
	m       *Manager
	r       *room
	sub     *broadcast.Subscriber[*Event]
	signal  broadcast.Signal // nil when the caller gave its own wake function
	wake    func()
	user    string
	once    sync.Once
	expired atomic.Bool

	pmu      sync.Mutex
	presence []*Event // presence events not yet taken
}

// Subscribe opens a subscription to the named room, creating the room if
// needed. The replay and the live events that follow it meet with no gap and
// no duplicate.
//
// wake, if not nil, runs when events are queued for the subscription or it
// ends; it runs with the room's locks held, so it must be quick and must not
// block or call the Manager. With a nil wake, wait on Ready instead.
func (m *Manager) Subscribe(roomName string, pos Position, wake func()) (*Subscription, error) {
	cfg := m.config()
	if n := m.subscribers.Add(1); cfg.MaxSubscribers > 0 && n > int64(cfg.MaxSubscribers) {
		m.subscribers.Add(-1)
		return nil, ErrTooManySubscribers
	}
	s := &Subscription{m: m, user: pos.User}
	if wake == nil {
		s.signal = broadcast.NewSignal()
		wake = s.signal.Wake
	}
	s.wake = wake
	s.sub = broadcast.NewSubscriber[*Event](cfg.Buffer, wake)
	var sp span
	err := m.reading(roomName, true, pos, func(r *room) error {
		sp, s.r = r.plan(pos, max(cfg.History, 0), cfg.MaxReplayBytes), r
		r.broadcaster.Register(s.sub)
		r.subscribers++
		if s.user != "" && !pos.UserVerified && pos.ReserveNames && r.verified.has(nameHash(s.user)) {
			s.user = ""
		}
		r.join(s, s.user, pos.WatchPresence)
		return nil
	})
	if err != nil {
		m.subscribers.Add(-1)
		return nil, err
	}
	// Registered first, read after: what is stored past sp.upto meanwhile
	// reaches the subscription live, and nothing twice.
	ctx, cancel := m.storeContext()
	s.Replay, err = sp.read(ctx, s.r.history)
	cancel()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("reading history of room %q: %w: %w", roomName, ErrUnavailable, err)
	}
	// What deletes erased is left out, and the deletes follow: the
	// room as it now stands, then what changed it since the reader's
	// position.
	s.Replay.Messages = slices.DeleteFunc(s.Replay.Messages, func(m Message) bool { return m.Deleted })
	s.Replay.fit(cfg.MaxReplayBytes, true)
	return s, nil
}

// Ready receives a value when events are queued or the subscription ended,
// for a subscription opened without a wake function.
func (s *Subscription) Ready() <-chan struct{} { return s.signal }

// Take appends every queued event to dst and returns it, what a stream
// writes next. Events are shared with other subscribers: do not modify
// them. err is nil while the subscription lasts; ErrEvicted when it fell
// behind, with no events (resuming from the last id replays what it
// missed, in order); ErrRoomClosed when the room was deleted, after the
// events queued before it and CloseEvent; ErrExpired once Expire was
// called, after the events queued before it and ExpiredEvent; ErrClosed
// after Close.
func (s *Subscription) Take(dst []*Event) (events []*Event, err error) {
	n := len(dst)
	events, err = s.sub.Take(dst)
	events = s.takePresence(events)
	switch {
	case err == nil:
		if s.expired.Load() {
			events, err = append(events, ExpiredEvent), ErrExpired
		}
	case errors.Is(err, broadcast.ErrEvicted):
		clear(events[n:])
		events, err = events[:n], ErrEvicted
	case errors.Is(err, broadcast.ErrClosed):
		events, err = append(events, CloseEvent), ErrRoomClosed
	default:
		err = ErrClosed
	}
	return events, err
}

// Expire ends the subscription's stream once the events already queued
// are taken, with ExpiredEvent: its reader's grant to read the room, such
// as a token, ran out. It wakes the reader, and may be called from any
// goroutine.
func (s *Subscription) Expire() {
	s.expired.Store(true)
	s.wake()
}

// Close ends the subscription. It is safe to call more than once. The last
// subscriber to leave a room in which nothing was ever posted drops it: a
// stream alone does not keep a room, so opening streams to made-up names
// cannot fill max_rooms.
func (s *Subscription) Close() {
	s.once.Do(func() {
		r := s.r
		r.mu.Lock()
		r.broadcaster.Unregister(s.sub)
		r.subscribers--
		r.leave(s, s.user)
		if r.subscribers == 0 {
			r.lastActive = time.Now()
		}
		unused := r.unused()
		r.mu.Unlock()
		s.m.subscribers.Add(-1)
		if unused {
			s.m.dropIf(r, "unused", (*room).unused)
		}
	})
}

// openElsewhere opens here the named room when another process sharing
// the store made it and this process has not opened it.
func (m *Manager) openElsewhere(roomName string) error {
	if !ValidName(roomName) || m.lookup(roomName) != nil {
		return nil
	}
	if has, err := m.heldElsewhere(roomName); err != nil || !has {
		return err
	}
	return m.withRoom(roomName, true, func(*room) error { return nil })
}

// heldElsewhere reports whether a store that other processes share holds
// the named room: a process, this one or another, posted to it.
func (m *Manager) heldElsewhere(roomName string) (bool, error) {
	ctx, cancel := m.storeContext()
	has, err := m.config().Store.HeldElsewhere(ctx, roomName)
	cancel()
	if err != nil {
		return false, fmt.Errorf("looking up room %q: %w: %w", roomName, ErrUnavailable, err)
	}
	return has, nil
}

// Lookup returns the message with the given id in an existing room as
// its store holds it, with its Author, for a caller that decides whether
// someone may edit or delete it: a deleted message is returned as its
// tombstone (Deleted). ErrNoMessage answers an id the room does not hold
// as a message. The store is read with the room released.
func (m *Manager) Lookup(roomName, id string) (Message, error) {
	if err := m.openElsewhere(roomName); err != nil {
		return Message{}, err
	}
	var h History
	err := m.withRoom(roomName, false, func(r *room) error {
		h = r.history
		return nil
	})
	if err != nil {
		return Message{}, err
	}
	// The entry read names its own id, in the epoch the history had:
	// an id of another epoch does not match it.
	_, seq, ok := ParseID(id)
	if !ok {
		return Message{}, ErrNoMessage
	}
	ctx, cancel := m.storeContext()
	msg, found, err := h.Lookup(ctx, seq)
	cancel()
	switch {
	case err != nil:
		return Message{}, fmt.Errorf("reading message %s of room %q: %w: %w", id, roomName, ErrUnavailable, err)
	case !found || msg.ID != id || msg.IsAction():
		return Message{}, ErrNoMessage
	}
	return msg, nil
}

// Messages returns up to limit retained messages of an existing room,
// oldest first, no more than MaxReplayBytes of them: the first limit after
// the message with id after, or the newest limit when after is empty.
// With before, only messages older than the message with that id are
// returned: paging back from the oldest message a reader has, the newest
// limit before it, and a replay that MaxReplayBytes cuts keeps the newest
// of them. An id of before that the room never had (another epoch,
// malformed) is answered as a lost position: Reset, no messages.
func (m *Manager) Messages(roomName, after, before string, limit int) (Replay, error) {
	cfg := m.config()
	budget := cfg.MaxReplayBytes
	if err := m.openElsewhere(roomName); err != nil {
		return Replay{}, err
	}
	pos := Position{LastEventID: after, History: limit}
	var (
		sp     span
		h      History
		oldest uint64
	)
	err := m.reading(roomName, false, pos, func(r *room) error {
		sp, h, oldest = r.plan(pos, limit, budget), r.history, r.history.Oldest()
		if before != "" {
			sp = sp.before(h, before, after == "")
		}
		return nil
	})
	if err != nil {
		return Replay{}, err
	}
	ctx, cancel := m.storeContext()
	// The messages show the edits and deletes applied already: the
	// actions themselves are for streams.
	rep, err := sp.readMessages(ctx, h, after == "")
	cancel()
	if err != nil {
		return Replay{}, fmt.Errorf("reading history of room %q: %w: %w", roomName, ErrUnavailable, err)
	}
	if sp.newest {
		rep.fitNewest(budget)
	} else {
		rep.fit(budget, false)
	}
	// Messages trimmed since plan are gone, so a span that began at the
	// oldest message still reaches the start, unless the budget cut its
	// oldest messages off.
	rep.Start = sp.after < oldest && !(sp.newest && rep.Truncated)
	return rep, nil
}

// Entries returns up to limit entries of an existing room's log after the
// one with id after, oldest first, for a reader that follows everything
// that happens in the room, such as a webhook: the messages as their
// edits and deletes left them (a deleted one as its tombstone), and the
// actions themselves. With after empty, it starts at the oldest entry
// retained; an after that is foreign or older than the history holds
// starts there too, with Reset set: the reader missed entries.
func (m *Manager) Entries(roomName, after string, limit int) (Replay, error) {
	if err := m.openElsewhere(roomName); err != nil {
		return Replay{}, err
	}
	pos := Position{LastEventID: after}
	var (
		sp span
		h  History
	)
	err := m.reading(roomName, false, pos, func(r *room) error {
		sp, h = r.plan(pos, limit, 0), r.history
		if after == "" {
			sp.after, sp.take = sp.floor, limit
		}
		return nil
	})
	if err != nil {
		return Replay{}, err
	}
	ctx, cancel := m.storeContext()
	rep, err := sp.read(ctx, h)
	cancel()
	if err != nil {
		return Replay{}, fmt.Errorf("reading the log of room %q: %w: %w", roomName, ErrUnavailable, err)
	}
	return rep, nil
}

// Delete removes a room and its history. Its subscribers' Take returns
// ErrRoomClosed after the events already queued. With a store that other
// processes share, a room that another process made is deleted too, its
// streams there ended.
func (m *Manager) Delete(roomName string) error {
	if !ValidName(roomName) {
		return ErrInvalidName
	}
	if err := m.openElsewhere(roomName); err != nil {
		return err
	}
	m.mu.Lock()
	r := m.rooms[roomName]
	if r == nil {
		m.mu.Unlock()
		return ErrNotFound
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return m.drop(r, "deleted")
}

// drop detaches r and releases its history, and unlocks m.mu, which must
// be held with r.mu. The history is released after m.mu is unlocked: a
// store that does not answer holds up this room, not every room's lookups.
// A room of the same name is opened once it is released (see create).
func (m *Manager) drop(r *room, reason string) error {
	m.detach(r, reason)
	released := make(chan struct{})
	m.releasingMu.Lock()
	m.releasing[r.name] = released
	m.releasingMu.Unlock()
	m.mu.Unlock()
	defer func() {
		m.releasingMu.Lock()
		delete(m.releasing, r.name)
		m.releasingMu.Unlock()
		close(released)
	}()
	return m.release(r, reason)
}

// released waits until the history of a dropped room of the given name,
// if one is being released, is done with it.
func (m *Manager) released(name string) {
	m.releasingMu.Lock()
	ch := m.releasing[name]
	m.releasingMu.Unlock()
	if ch != nil {
		<-ch
	}
}

// detach takes a room out of the map and closes it, so that no caller can
// reach it between the two. m.mu and r.mu must be held.
func (m *Manager) detach(r *room, reason string) {
	delete(m.rooms, r.name)
	r.closed = true
	r.broadcaster.Close()
	if h := m.config().Hooks.Presence; h != nil && reason != "closed" {
		// The room's announcements end with it, as the last stream of a
		// room with nothing posted leaves: who was announced has left,
		// but for those whose streams another process holds, which
		// goes on announcing them.
		var left []string
		for u := range r.presence.announced {
			if r.others.Users[u] == 0 {
				left = append(left, u)
			}
		}
		if len(left) > 0 {
			slices.Sort(left)
			h(r.name, PresenceChange{Joined: []string{}, Left: left})
		}
	}
	if h := m.config().Hooks.RoomDropped; h != nil {
		h(r.name, reason)
	}
}

// release closes, expires or drops the history of a room that detach
// closed. r.mu must be held, and m.mu need not: the store may take its time
// without holding up the other rooms.
func (m *Manager) release(r *room, reason string) error {
	// Closing keeps a durable history for the next process; a delete ends
	// the room for good, in every process; the idle sweep and the last
	// stream of an unused room only let it go here, as the history says.
	if reason == "closed" {
		if err := r.history.Close(); err != nil {
			return fmt.Errorf("closing history of room %q: %w", r.name, err)
		}
		return nil
	}
	ctx, cancel := m.storeContext()
	defer cancel()
	release := r.history.Expire
	if reason == "deleted" {
		release = r.history.Drop
	}
	if err := release(ctx); err != nil {
		return fmt.Errorf("releasing history of room %q (%s): %w: %w", r.name, reason, ErrUnavailable, err)
	}
	return nil
}

// RoomInfo describes a room for listings.
type RoomInfo struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
	// Users is how many named users have streams open in the room.
	Users  int    `json:"users"`
	LastID string `json:"last_id"`
}

// Rooms lists the rooms, sorted by name: with a store that several
// processes share, those of every process, with their followers summed.
func (m *Manager) Rooms() []RoomInfo {
	rs := m.snapshot()
	out := make([]RoomInfo, 0, len(rs))
	for _, r := range rs {
		r.mu.Lock()
		if !r.closed {
			users := len(r.presence.streams)
			for u := range r.others.Users {
				if r.presence.streams[u] == 0 {
					users++
				}
			}
			out = append(out, RoomInfo{Name: r.name, Subscribers: r.subscribers + r.others.Subscribers, Users: users, LastID: r.lastID()})
		}
		r.mu.Unlock()
	}
	out = m.listElsewhere(out)
	slices.SortFunc(out, func(a, b RoomInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Len returns the number of rooms.
func (m *Manager) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.rooms)
}

// Subscribers returns the number of open subscriptions across all rooms.
func (m *Manager) Subscribers() int { return int(m.subscribers.Load()) }

func (m *Manager) snapshot() []*room {
	m.mu.RLock()
	defer m.mu.RUnlock()
	rs := make([]*room, 0, len(m.rooms))
	for _, r := range m.rooms {
		rs = append(rs, r)
	}
	return rs
}

// Close closes every room, ending all subscriptions with ErrRoomClosed, and
// stops the sweeper. The Manager refuses all calls afterwards.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var errs []error
	for _, r := range m.rooms {
		r.mu.Lock()
		m.detach(r, "closed")
		errs = append(errs, m.release(r, "closed"))
		r.mu.Unlock()
	}
	m.mu.Unlock()
	close(m.stopJanitor)
	<-m.janitorDone
	if m.censusDone != nil {
		<-m.censusDone
	}
	m.deliveringMu.Lock()
	m.deliveringDone = true
	m.deliveringMu.Unlock()
	m.delivering.Wait()
	return errors.Join(errs...)
}

// janitor drops idle rooms until Close, checking about four times per
// idle timeout.
func (m *Manager) janitor() {
	defer close(m.janitorDone)
	for {
		cfg := m.config()
		period := time.Minute
		if cfg.IdleTimeout > 0 {
			period = min(period, cfg.IdleTimeout)
		}
		select {
		case <-m.stopJanitor:
			return
		case <-m.reconfigured:
		case <-time.After(min(max(period/4, 10*time.Millisecond), time.Minute)):
			m.sweep(time.Now())
		}
	}
}

// sweep drops every room idle for longer than the idle timeout.
func (m *Manager) sweep(now time.Time) {
	cfg := m.config()
	if cfg.IdleTimeout <= 0 {
		return
	}
	idle := func(r *room) bool {
		return !r.closed && r.subscribers == 0 && r.storing == 0 && now.Sub(r.lastActive) >= cfg.IdleTimeout
	}
	for _, r := range m.snapshot() {
		r.mu.Lock()
		expired := idle(r)
		r.mu.Unlock()
		if expired {
			m.dropIf(r, "idle", idle)
		}
	}
}

// dropIf drops r for reason if cond still holds once both locks are taken:
// a subscriber or a message may have come since the caller looked.
func (m *Manager) dropIf(r *room, reason string, cond func(*room) bool) {
	m.mu.Lock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !cond(r) {
		m.mu.Unlock()
		return
	}
	_ = m.drop(r, reason)
}

// unused reports whether no one follows the room and nothing was ever
// posted to it, or is being. r.mu must be held.
func (r *room) unused() bool {
	return !r.closed && r.subscribers == 0 && r.storing == 0 && r.history.Last() == 0
}
