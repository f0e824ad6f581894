package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// Rooms is what a webhook reads the rooms' logs from and keeps its
// positions and leases in: a *rooms.Manager.
type Rooms interface {
	Rooms() []rooms.RoomInfo
	Entries(room, after string, limit int) (rooms.Replay, error)
	Position(name string) (string, error)
	SetPosition(name, value string) error
	Lease(name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Poster posts a signed batch: a *hooks.Client.
type Poster interface {
	Post(ctx context.Context, e hooks.Endpoint, id string, body []byte) (hooks.Answer, error)
}

// Stats counts what a webhook does, for the embedding program's metrics.
// Its methods must be quick: some run with a room's lock held.
type Stats interface {
	// Delivered counts the events of a batch answered 2xx, latency after
	// the POST began.
	Delivered(events int, latency time.Duration)
	// Failed counts a POST that failed.
	Failed()
	// Retried counts a batch posted again after a failure.
	Retried()
	// Dropped counts events that will never be delivered: the queue was
	// full, the history no longer held them, or the batch was given up.
	Dropped(events int)
}

const (
	// queueBatches bounds the queue of events not in a log, in batches.
	queueBatches = 10
	// recheck is how often rooms whose lease another node holds, or
	// whose store failed, are tried again.
	recheck = time.Second
	// rescan is how often every room's last entry is compared with what
	// the webhook knows delivered: a node hears only of the posts to
	// rooms it has open, and takes over the others' when a node that
	// delivered them dies.
	rescan = 5 * time.Second
	// minLease is the shortest lease of a room: a node that dies holding
	// it delays the room's events this long.
	minLease = 10 * time.Second
	// keepSinceEvery is how often a running webhook keeps when it began
	// again: well within the least a position lasts in Redis (48 h).
	keepSinceEvery = time.Hour
	// onceLease is how long an event sent once among nodes, such as a
	// join that every node hears of, is remembered.
	onceLease = 10 * time.Second
	// releaseWithin bounds the release of a stopping Webhook's leases:
	// a stop or a reload must not wait for a slow store, and the leases
	// expire anyway.
	releaseWithin = 500 * time.Millisecond
)

// Webhook delivers the events of one Config. Its methods are safe for
// concurrent use; those that hear of events only note them, never wait,
// so that they may run under a room's lock.
type Webhook struct {
	cfg      Config
	name     string // of its positions and leases
	holder   string // of its leases: this Webhook alone
	endpoint hooks.Endpoint
	rooms    Rooms
	poster   Poster
	stats    Stats
	log      *zap.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	wake     chan struct{}

	mu      sync.Mutex
	dirty   map[string]bool // rooms whose logs may hold news
	queue   []Event
	pending int  // events heard of since the last batch was taken
	dropped int  // queued events dropped since the last log of them
	ended   bool // by Stop or a 410: news is ignored

	// The run goroutine's own: rooms to try again at the next recheck,
	// those whose lease it holds, and the last entry it knows delivered
	// in each room, by it or another node.
	waiting map[string]bool
	held    map[string]bool
	known   map[string]string
}

// Start begins delivering cfg's events from r with p. Call Stop when done.
func Start(cfg Config, r Rooms, p Poster, stats Stats, log *zap.Logger) *Webhook {
	cfg = cfg.withDefaults()
	w := &Webhook{
		cfg:      cfg,
		name:     cfg.name(),
		holder:   hooks.NewID(),
		endpoint: hooks.Endpoint{URL: cfg.URL, Secret: cfg.Secret, Timeout: cfg.Timeout},
		rooms:    r,
		poster:   p,
		stats:    stats,
		log:      log.With(zap.String("url", cfg.URL)),
		done:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
		dirty:    map[string]bool{},
		waiting:  map[string]bool{},
		held:     map[string]bool{},
		known:    map[string]string{},
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	since, known := w.since()
	go w.run(since, known)
	return w
}

// Stop ends delivery: a POST in flight is cancelled and its batch's
// positions stay where they were, so that the next Webhook of the same
// URL sends its messages, edits and deletes again. Its other events, and
// those still queued, are in no log to be read again: they are counted as
// dropped and logged.
func (w *Webhook) Stop() {
	w.cancel()
	<-w.done
}

// Published notes that the room's log has a new entry.
func (w *Webhook) Published(room string) {
	if w.cfg.readsLog() && w.cfg.follows(room) {
		w.note(func() { w.dirty[room] = true })
	}
}

// Presence queues the join and leave events of a room's presence event.
func (w *Webhook) Presence(room string, change rooms.PresenceChange) {
	for _, ev := range []struct {
		typ   string
		users []string
	}{{EventJoin, change.Joined}, {EventLeave, change.Left}} {
		if len(ev.users) > 0 {
			data := dataOf(Users{Users: ev.users})
			sum := sha256.Sum256(append([]byte(ev.typ+" "+room+" "), data...))
			// Every node of a shared store hears who joined: the one
			// that leases the event first sends it. Nodes that
			// coalesced other users into their events each send
			// theirs (see docs/limitations.md).
			w.enqueue(Event{Type: ev.typ, Room: room, ID: hooks.NewID(), Time: time.Now().UTC(), Data: data, once: hex.EncodeToString(sum[:12])})
		}
	}
}

// Banned queues the ban event of b; a ban in every room is delivered
// whatever the room patterns.
func (w *Webhook) Banned(b rooms.Ban) {
	w.enqueue(Event{Type: EventBan, Room: b.Room, ID: b.ID, Time: b.Created, Data: dataOf(b)})
}

// RoomDropped queues the room_dropped event of a room gone with its log,
// and has the webhook forget its position there.
func (w *Webhook) RoomDropped(room, reason string) {
	w.enqueue(Event{Type: EventRoomDropped, Room: room, ID: hooks.NewID(), Time: time.Now().UTC(), Data: dataOf(Dropped{Reason: reason}), once: "dropped " + room})
	w.Published(room)
}

// enqueue holds ev for the next batch, or drops it and counts it when the
// queue is full.
func (w *Webhook) enqueue(ev Event) {
	if !w.cfg.wants(ev.Type) || ev.Room != rooms.AllRooms && !w.cfg.follows(ev.Room) {
		return
	}
	w.note(func() {
		if len(w.queue) >= queueBatches*w.cfg.BatchSize {
			w.dropped++
			w.stats.Dropped(1)
			return
		}
		w.queue = append(w.queue, ev)
	})
}

// note records news with f, under w.mu, and wakes the run goroutine.
func (w *Webhook) note(f func()) {
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		return
	}
	f()
	w.pending++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// run delivers batches until Stop, or until the receiver answers 410; a
// room whose position it does not know yet is delivered from since on.
// Unless since is known, as the store could not be read, it is read again
// when it would be kept.
func (w *Webhook) run(since time.Time, known bool) {
	defer close(w.done)
	defer w.releaseAll()
	inFlight := 0 // events of the batch in flight that no log holds
	defer func() { w.end(inFlight) }()
	// What the logs hold past the positions: news missed while no
	// Webhook of this URL ran, such as during a restart.
	w.scan()
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	scanned, kept := time.Now(), time.Now()
	for {
		if !w.gather(tick.C) {
			return
		}
		if time.Since(scanned) >= rescan {
			w.scan()
			scanned = time.Now()
		}
		if time.Since(kept) >= keepSinceEvery {
			if known {
				w.keepSince(since)
			} else {
				since, known = w.since()
			}
			kept = time.Now()
		}
		batch, marks, queued := w.collect(since)
		if len(batch) > 0 {
			switch w.send(batch, marks) {
			case stopped:
				inFlight = queued
				return
			case disabled:
				return
			}
		}
		w.advance(marks)
	}
}

// end takes no more news, and counts and logs as dropped the queued events
// that the Webhook never delivered, with inFlight of the batch it was
// sending: joins, leaves, bans and dropped rooms are in no log that the
// next Webhook of the URL could read them from again.
func (w *Webhook) end(inFlight int) {
	w.mu.Lock()
	w.ended = true
	lost := inFlight + len(w.queue)
	full := w.dropped // counted already, not logged yet
	w.queue, w.dirty, w.dropped = nil, nil, 0
	w.mu.Unlock()
	if lost > 0 {
		w.stats.Dropped(lost)
	}
	if lost+full > 0 {
		w.log.Warn("webhook stopped: the joins, leaves, bans and dropped rooms it had not delivered are dropped",
			zap.Int("events", lost+full))
	}
}

// scan marks dirty the rooms whose last entry is not the one the webhook
// knows delivered.
func (w *Webhook) scan() {
	if !w.cfg.readsLog() {
		return
	}
	var news []string
	for _, r := range w.rooms.Rooms() {
		if w.cfg.follows(r.Name) && r.LastID != "" && r.LastID != w.known[r.Name] {
			news = append(news, r.Name)
		}
	}
	if len(news) > 0 {
		w.again(news...)
	}
}

// gather waits for news, then for a batch's worth of it or BatchWait, or
// for the next recheck, and reports whether the Webhook goes on.
func (w *Webhook) gather(tick <-chan time.Time) bool {
	select {
	case <-w.ctx.Done():
		return false
	case <-tick:
		// Rooms whose lease another node held, or whose store failed,
		// are tried again.
		w.mu.Lock()
		for room := range w.waiting {
			w.dirty[room] = true
		}
		w.mu.Unlock()
		clear(w.waiting)
		return true
	case <-w.wake:
	}
	timer := time.NewTimer(w.cfg.BatchWait)
	defer timer.Stop()
	for {
		w.mu.Lock()
		full := w.pending >= w.cfg.BatchSize
		w.mu.Unlock()
		if full {
			return true
		}
		select {
		case <-w.ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-w.wake:
		}
	}
}

// mark is how far a batch reaches in a room's log.
type mark struct {
	room, key, last string
	caughtUp        bool // the batch holds the room's last entry
}

// since returns when the webhook was first configured, as the store keeps
// it, and keeps it again: a room whose position it does not know yet is
// delivered from then on, not from the start of its history. When the
// store cannot be read, it returns now, for the time being, and known
// false: written, now would replace the true time for every node.
func (w *Webhook) since() (since time.Time, known bool) {
	// Messages carry their time to the millisecond.
	now := time.Now().UTC().Truncate(time.Millisecond)
	v, err := w.rooms.Position(w.name + " since")
	if err != nil {
		w.log.Warn("webhook could not read when it began; it reads it again within the hour", zap.Error(err))
		return now, false
	}
	since, err = time.Parse(time.RFC3339Nano, v)
	if err != nil {
		since = now // the first start
	}
	w.keepSince(since)
	return since, true
}

// keepSince writes since to the store. A store shared with other nodes
// expires a position that is not set again (see keepSinceEvery); lost,
// since would move to the next start, and the messages before it of a
// room not delivered yet would never be.
func (w *Webhook) keepSince(since time.Time) {
	if err := w.rooms.SetPosition(w.name+" since", since.Format(time.RFC3339Nano)); err != nil {
		w.log.Warn("webhook could not keep when it began", zap.Error(err))
	}
}

// collect takes the queued events and reads the dirty rooms' logs past
// their positions, up to BatchSize events, of which the first queued came
// from the queue.
func (w *Webhook) collect(since time.Time) (batch []Event, marks []mark, queued int) {
	w.mu.Lock()
	n := min(len(w.queue), w.cfg.BatchSize)
	taken := slices.Clone(w.queue[:n])
	w.queue = slices.Delete(w.queue, 0, n)
	dirty := make([]string, 0, len(w.dirty))
	for room := range w.dirty {
		dirty = append(dirty, room)
	}
	clear(w.dirty)
	w.pending = len(w.queue)
	dropped := w.dropped
	w.dropped = 0
	w.mu.Unlock()
	if dropped > 0 {
		w.log.Warn("webhook queue full: events dropped", zap.Int("events", dropped))
	}
	batch = make([]Event, 0, w.cfg.BatchSize)
	for _, ev := range taken {
		// Stopping, the batch is not sent: the event is counted as
		// dropped without asking a slow store who sends it.
		if ev.once != "" && w.ctx.Err() == nil {
			if ok, err := w.rooms.Lease(w.name+" once "+ev.once, w.holder, onceLease); err == nil && !ok {
				continue // another node sends it
			}
		}
		batch = append(batch, ev)
	}
	queued = len(batch)
	slices.Sort(dirty)
	for i, room := range dirty {
		if w.ctx.Err() != nil {
			// Stopping: the next Webhook of the URL reads the logs.
			break
		}
		left := w.cfg.BatchSize - len(batch)
		if left <= 0 {
			w.behind(dirty[i:]...)
			break
		}
		var m mark
		batch, m = w.read(batch, room, left, since)
		if m.key != "" {
			marks = append(marks, m)
		}
	}
	return batch, marks, queued
}

// again marks rooms dirty for the next batch.
func (w *Webhook) again(rooms ...string) {
	w.note(func() {
		for _, room := range rooms {
			w.dirty[room] = true
		}
	})
}

// behind marks rooms whose logs hold more than a batch took: the next
// batch goes without waiting for BatchWait.
func (w *Webhook) behind(rooms ...string) {
	w.note(func() {
		for _, room := range rooms {
			w.dirty[room] = true
		}
		w.pending = max(w.pending, w.cfg.BatchSize)
	})
}

// read appends to batch the events of up to limit entries of room's log
// past the webhook's position, once it holds the room's lease, and returns
// how far it read. A room another node delivers, or whose store failed,
// waits for the next recheck.
func (w *Webhook) read(batch []Event, room string, limit int, since time.Time) ([]Event, mark) {
	key := w.name + " room " + room
	ok, err := w.rooms.Lease(key, w.holder, w.leaseTTL())
	if err != nil || !ok {
		if err != nil {
			w.log.Warn("webhook could not lease a room", zap.String("room", room), zap.Error(err))
		}
		w.waiting[room] = true
		return batch, mark{}
	}
	w.held[key] = true
	pos, err := w.rooms.Position(key)
	if err != nil {
		w.log.Warn("webhook could not read its position", zap.String("room", room), zap.Error(err))
		w.waiting[room] = true
		return batch, mark{}
	}
	rep, err := w.rooms.Entries(room, pos, limit)
	if errors.Is(err, rooms.ErrNotFound) {
		// The room is gone with its log: nothing is left to send.
		delete(w.known, room)
		if err := w.rooms.SetPosition(key, ""); err != nil {
			w.log.Warn("webhook could not forget its position", zap.String("room", room), zap.Error(err))
		}
		w.release(key)
		return batch, mark{}
	}
	if err != nil {
		w.log.Warn("webhook could not read a room", zap.String("room", room), zap.Error(err))
		w.waiting[room] = true
		return batch, mark{}
	}
	if rep.Reset && pos != "" {
		lost := lostBetween(pos, rep)
		w.stats.Dropped(lost)
		w.log.Warn("webhook fell behind the room's history: events dropped",
			zap.String("room", room), zap.String("after", pos), zap.Int("events", lost))
	}
	m := mark{room: room, key: key, last: pos, caughtUp: len(rep.Messages) < limit}
	for _, e := range rep.Messages {
		evs := w.eventsOf(room, e, pos == "" && e.Time.Before(since))
		if len(batch)+len(evs) > w.cfg.BatchSize {
			m.caughtUp = false
			break
		}
		batch = append(batch, evs...)
		m.last = e.ID
	}
	if !m.caughtUp {
		w.behind(room)
	}
	if m.caughtUp && len(rep.Messages) == 0 {
		w.known[room] = pos
	}
	if m.last == pos {
		w.release(key)
		return batch, mark{}
	}
	return batch, m
}

// eventsOf returns the events of a log entry that the webhook delivers:
// none for an entry from before the webhook began, else the room's
// creation before its first entry, and the entry itself.
func (w *Webhook) eventsOf(room string, e rooms.Message, before bool) []Event {
	if before {
		return nil
	}
	var evs []Event
	if epoch, seq, _ := rooms.ParseID(e.ID); seq == 1 && w.cfg.wants(EventRoomCreated) {
		evs = append(evs, Event{Type: EventRoomCreated, Room: room, ID: "created-" + epoch, Time: e.Time, Data: json.RawMessage("{}")})
	}
	if ev := entryEvent(room, e); w.cfg.wants(ev.Type) {
		evs = append(evs, ev)
	}
	return evs
}

// lostBetween counts the entries between pos and the first one rep holds,
// in the same epoch; those of an earlier epoch are not known.
func lostBetween(pos string, rep rooms.Replay) int {
	epoch, seq, _ := rooms.ParseID(pos)
	first := rep.Oldest
	if len(rep.Messages) > 0 {
		first = rep.Messages[0].ID
	}
	if e, s, ok := rooms.ParseID(first); ok && e == epoch && s > seq {
		return int(s - seq - 1)
	}
	return 0
}

// outcome is how sending a batch ended.
type outcome int

const (
	delivered outcome = iota
	gaveUp            // retried for RetryFor: dropped
	disabled          // the receiver answered 410 Gone
	stopped           // Stop was called
)

// send posts batch under one webhook id until the receiver answers 2xx,
// retrying with jittered exponential backoff for up to RetryFor, and
// keeps the leases of the batch's rooms meanwhile.
func (w *Webhook) send(batch []Event, marks []mark) outcome {
	body, _ := json.Marshal(Batch{Events: batch}) // cannot fail: strings, times and JSON made here
	id := hooks.NewID()
	giveUp := time.Now().Add(w.cfg.RetryFor)
	for attempt := 0; ; attempt++ {
		start := time.Now()
		_, err := w.poster.Post(w.ctx, w.endpoint, id, body)
		if err == nil {
			w.stats.Delivered(len(batch), time.Since(start))
			return delivered
		}
		if w.ctx.Err() != nil || errors.Is(err, hooks.ErrClosed) {
			return stopped
		}
		w.stats.Failed()
		if se := (*hooks.StatusError)(nil); errors.As(err, &se) && se.Status == http.StatusGone {
			w.stats.Dropped(len(batch))
			w.log.Error("webhook disabled: its receiver answered 410 Gone; it stays off until the config is loaded again",
				zap.Int("events", len(batch)))
			return disabled
		}
		if time.Now().After(giveUp) {
			w.stats.Dropped(len(batch))
			w.log.Error("webhook gave up a batch after retrying it", zap.Duration("for", w.cfg.RetryFor),
				zap.Int("events", len(batch)), zap.Error(err))
			return gaveUp
		}
		delay := backoff(w.cfg.Backoff, attempt)
		w.log.Warn("webhook delivery failed; retrying", zap.Int("attempt", attempt+1),
			zap.Duration("retry_in", delay), zap.Int("events", len(batch)), zap.Error(err))
		if !w.wait(delay, marks) {
			return stopped
		}
		w.stats.Retried()
	}
}

// wait waits d before a retry, renewing the leases of the batch's rooms
// meanwhile, and reports whether the Webhook goes on.
func (w *Webhook) wait(d time.Duration, marks []mark) bool {
	end := time.Now().Add(d)
	for {
		step := min(time.Until(end), w.leaseTTL()/3)
		if step <= 0 {
			return true
		}
		select {
		case <-w.ctx.Done():
			return false
		case <-time.After(step):
		}
		for _, m := range marks {
			// A lease that ran out and went to another node is not
			// taken back: both send the room's events until this batch
			// is delivered, at least once.
			if _, err := w.rooms.Lease(m.key, w.holder, w.leaseTTL()); err != nil {
				w.log.Warn("webhook could not renew a lease", zap.String("room", m.room), zap.Error(err))
			}
		}
	}
}

// backoff is the wait before retry attempt+1: base doubled per attempt, up
// to maxBackoff, within ±50% so that many nodes do not retry at once.
func backoff(base time.Duration, attempt int) time.Duration {
	d := maxBackoff
	if attempt < 20 {
		d = min(base<<attempt, maxBackoff)
	}
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}

// advance keeps the positions the batch reached and lets go of the rooms
// it caught up with.
func (w *Webhook) advance(marks []mark) {
	for _, m := range marks {
		if err := w.rooms.SetPosition(m.key, m.last); err != nil {
			// The batch is sent again from the old position: at least
			// once.
			w.log.Warn("webhook could not keep its position", zap.String("room", m.room), zap.Error(err))
			w.waiting[m.room] = true
			continue
		}
		if m.caughtUp {
			w.known[m.room] = m.last
			w.release(m.key)
		}
	}
}

// release lets go of a room's lease.
func (w *Webhook) release(key string) {
	delete(w.held, key)
	if err := w.rooms.ReleaseLease(context.Background(), key, w.holder); err != nil {
		w.log.Warn("webhook could not release a lease; it expires", zap.String("lease", key), zap.Error(err))
	}
}

// releaseAll lets go of every lease held, as the Webhook stops: all at
// once, within releaseWithin, with one log of those it could not.
func (w *Webhook) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), releaseWithin)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		last   error
	)
	for key := range w.held {
		wg.Go(func() {
			if err := w.rooms.ReleaseLease(ctx, key, w.holder); err != nil {
				mu.Lock()
				failed, last = failed+1, err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	clear(w.held)
	if failed > 0 {
		w.log.Warn("webhook could not release its leases as it stopped; they expire",
			zap.Int("leases", failed), zap.Duration("expire_within", w.leaseTTL()), zap.Error(last))
	}
}

// leaseTTL is how long a room's lease lasts: past a POST's timeout, so
// that it does not expire while the POST is in flight.
func (w *Webhook) leaseTTL() time.Duration { return max(minLease, 2*w.cfg.Timeout) }
