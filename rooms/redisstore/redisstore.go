// Package redisstore keeps chat rooms in Redis (or Valkey), so that several
// Caddy nodes serve the same rooms: one order of messages per room, ids that
// every node continues, idempotency keys that hold across nodes, and each
// message delivered to every node's subscribers.
//
// A room's keys share the hash tag {room}, so that one Lua script stores a
// submit, even in Redis Cluster: it reads or creates the room's epoch in a
// hash, increments the sequence there, adds each message to a stream whose
// entry ids are the sequence numbers, trimmed to the history size, records
// the idempotency key with a TTL, and publishes the batch with its sequence
// numbers and epoch. Each Store keeps one subscription connection, on which
// it subscribes to the rooms open here, and to the bans' channel (see
// bans.go); a history that hears a sequence
// number past the one it expects reads the gap from the stream before it
// delivers more, and reads it again whenever the subscription is
// re-established, so a message missed while Redis was away is delivered
// late, never skipped. An edit or a delete is an entry of the stream too;
// the script that stores it writes the stream anew with its target
// changed, so that erased text leaves Redis, and keeps the erased entries,
// without text, so that their sequence numbers never look lost.
package redisstore

import (
	"cmp"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// DefaultPrefix starts the names of every key and channel the store uses.
const DefaultPrefix = "chat:"

// Options configure a Store.
type Options struct {
	// Prefix starts every key and channel name; default DefaultPrefix.
	// Nodes that share rooms use the same prefix.
	Prefix string
	// Timeout bounds the calls the Store makes of its own, in the
	// background: reading a gap, unsubscribing. Default DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout is the default of Options.Timeout.
const DefaultTimeout = 2 * time.Second

// Store is a rooms.Store on a Redis client. Its methods are safe for
// concurrent use.
type Store struct {
	client  redis.UniversalClient
	prefix  string
	keyTTL  atomic.Int64 // a time.Duration; see SetKeyWindow
	idleTTL atomic.Int64 // a time.Duration; see SetIdleTimeout
	timeout time.Duration
	// retries is set for a client that may send a script call again
	// (see answerTTL).
	retries bool
	append  *redis.Script
	// id names this Store in the tokens of its script calls, and calls
	// counts them.
	id    string
	calls atomic.Uint64
	ps    *redis.PubSub
	done  chan struct{}
	// closing is canceled by Close: the Store's own calls end then.
	closing context.Context
	stop    context.CancelFunc
	// work counts the goroutines that read gaps and unsubscribe; Close
	// waits for them.
	work sync.WaitGroup

	// subscribing orders subscribes and unsubscribes, so that a room
	// let go and opened again at once stays subscribed.
	subscribing sync.Mutex
	mu          sync.Mutex
	listeners   map[string]*history // by channel
	closed      bool                // no more work is started

	census census
	bans   *banCopy
}

//go:embed append.lua
var appendScript string

// New returns a Store on client, which it closes with Close, and starts its
// subscription connection.
func New(client redis.UniversalClient, opt Options) *Store {
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails
	s := &Store{
		id:        hex.EncodeToString(id[:]),
		client:    client,
		prefix:    opt.Prefix,
		timeout:   opt.Timeout,
		append:    redis.NewScript(appendScript),
		done:      make(chan struct{}),
		listeners: make(map[string]*history),
	}
	_, s.retries = client.(*redis.ClusterClient)
	s.keyTTL.Store(int64(rooms.DefaultKeyWindow))
	s.closing, s.stop = context.WithCancel(context.Background())
	s.bans = newBanCopy(s)
	// The bans' channel is subscribed to for the Store's life: its
	// confirmation, and each after a reconnect, reads the bans (see
	// banCopy.hear). A Redis that does not answer yet is subscribed to
	// once it does.
	ctx, cancel := context.WithTimeout(s.closing, s.timeout)
	s.ps = client.Subscribe(ctx, s.bans.keys.channel)
	cancel()
	go s.listen(s.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	return s
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis chat store: %w", err)
	}
	return nil
}

// Close stops the subscription, waits for the Store's goroutines and closes
// the client.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	err := s.ps.Close()
	<-s.done
	s.work.Wait()
	return errors.Join(err, s.client.Close())
}

// SetIdleTimeout makes Redis expire a room that gets no message for d from
// its next message on, and has no stream on any node (see census.go), on
// every node at once; 0 keeps rooms until they are deleted. The Manager
// calls it with its IdleTimeout, also on a reload that changes it.
func (s *Store) SetIdleTimeout(d time.Duration) { s.idleTTL.Store(int64(d)) }

// SetKeyWindow has Redis keep each idempotency key for window, with the
// messages, where every node finds it; Redis bounds their number by
// memory, so maxKeys does not apply.
func (s *Store) SetKeyWindow(window time.Duration, _ int) {
	if window <= 0 {
		window = rooms.DefaultKeyWindow
	}
	s.keyTTL.Store(int64(window))
}

func (s *Store) idleTimeout() time.Duration { return time.Duration(s.idleTTL.Load()) }

// spawn runs f on a goroutine that Close waits for, and reports whether it
// did: once Close has begun, it does not.
func (s *Store) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.work.Go(f)
	return true
}

// listen routes what the subscription connection receives to the history
// of its room. A confirmed subscription, the first or one renewed after a
// reconnect, makes the history read the stream: messages published while
// the connection was down are delivered then.
func (s *Store) listen(ch <-chan any) {
	defer close(s.done)
	for v := range ch {
		var channel, payload string
		switch v := v.(type) {
		case *redis.Subscription:
			if v.Kind != "subscribe" {
				continue
			}
			channel = v.Channel
		case *redis.Message:
			channel, payload = v.Channel, v.Payload
		default:
			continue
		}
		if channel == s.bans.keys.channel {
			s.bans.hear(payload)
			continue
		}
		s.mu.Lock()
		h := s.listeners[channel]
		s.mu.Unlock()
		if h != nil {
			h.hear(payload)
		}
	}
}

// keys names a room's keys; they share the hash tag {room}.
type keys struct {
	meta, stream, channel, key, call string
}

func (s *Store) keysOf(room string) keys {
	base := s.prefix + "{" + room + "}:"
	return keys{meta: base + "meta", stream: base + "msgs", channel: base + "pub", key: base + "key:", call: base + "call:"}
}

// answerTTL is how long the script keeps the answer to a call made with
// ctx, for a retry of it: go-redis's ClusterClient sends a script again on
// a closed connection whatever its MaxRetries, and the retry must not
// store the messages again. Retries come before the call's deadline (the
// Store's timeout when it has none); twice the time to it is a margin for
// the clocks of the node and of Redis. A client that never retries gets
// 0: no answer is kept.
func (s *Store) answerTTL(ctx context.Context) time.Duration {
	if !s.retries {
		return 0
	}
	timeout := s.timeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	// A call past its deadline is not sent; Redis needs a positive TTL.
	return max(2*timeout, time.Millisecond)
}

// Kept returns no room: every node opens a room as it is asked for it, and
// finds it with HeldElsewhere.
func (s *Store) Kept(context.Context) ([]string, error) { return nil, nil }

// HeldElsewhere reports whether Redis holds the room: a node, this one or
// another, made it.
func (s *Store) HeldElsewhere(ctx context.Context, room string) (bool, error) {
	n, err := s.client.Exists(ctx, s.keysOf(room).meta).Result()
	if err != nil {
		return false, fmt.Errorf("looking up room %q in redis: %w", room, err)
	}
	return n > 0, nil
}

// Open subscribes to the room's channel, then reads its epoch and last
// sequence number: a message published in between is heard, not lost. A
// room that Redis does not hold gets a new epoch and costs nothing there
// until its first message.
func (s *Store) Open(ctx context.Context, room string, capacity int) (rooms.History, error) {
	h := &history{s: s, room: room, keys: s.keysOf(room), capacity: capacity}
	s.subscribing.Lock()
	s.mu.Lock()
	s.listeners[h.keys.channel] = h
	s.mu.Unlock()
	err := s.ps.Subscribe(ctx, h.keys.channel)
	s.subscribing.Unlock()
	if err != nil {
		h.unlisten()
		return nil, fmt.Errorf("subscribing to room %q in redis: %w", room, err)
	}
	vals, err := s.client.HMGet(ctx, h.keys.meta, "epoch", "last").Result()
	if err != nil {
		h.unlisten()
		return nil, fmt.Errorf("reading room %q from redis: %w", room, err)
	}
	h.epoch = rooms.NewEpoch()
	if e, ok := vals[0].(string); ok {
		h.epoch = e
		h.last, _ = strconv.ParseUint(fmt.Sprint(vals[1]), 10, 64)
	}
	h.settle()
	return h, nil
}

// settle makes the history's position, as the room's lock leaves it, that
// of Read and Sync.
func (h *history) settle() {
	h.mu.Lock()
	h.seen.epoch, h.seen.last, h.seen.started, h.seen.idle = h.epoch, h.last, h.started, len(h.calls) == 0
	h.mu.Unlock()
}

// history is one room in Redis. The Manager serialises its methods under
// the room's lock; mu guards what the subscription goroutine hands over.
type history struct {
	s        *Store
	room     string
	keys     keys
	capacity int
	epoch    string
	last     uint64          // the newest sequence number delivered
	own      []rooms.Message // appended here or caught, not yet delivered
	stale    bool            // the room was deleted and made again elsewhere
	// left is the epoch this history left for a new one when Redis lost
	// messages of it (see restart); what is heard of it is let be.
	left string
	// Script calls started (see Start), those not finished yet, and the
	// value of started when Catch first found the gap it waits for (0
	// for none), which begins after gapFrom.
	started, gapSeen, gapFrom uint64
	calls                     []uint64

	mu       sync.Mutex
	heard    []notice
	resync   bool
	notify   func()
	fetching bool       // a read of the stream runs (fetchLater)
	fetched  []*fetched // reads for the next Catch, oldest first
	// seen is the history's epoch, last, script calls started and
	// whether none is under way, as the room's lock left them, for Read
	// and Sync, which run without it.
	seen struct {
		epoch         string
		last, started uint64
		idle          bool
	}
}

// notice is what a room's channel carries: a batch of messages, or the
// deletion of the room's epoch.
type notice struct {
	Epoch   string      `json:"e"`
	Deleted bool        `json:"d,omitempty"`
	Msgs    []published `json:"m,omitempty"`
	// From is the epoch the room went on from when Redis may have lost
	// messages of it, "" for none, and Base the last sequence number of
	// the messages it kept, which the new epoch goes on from.
	From string `json:"f,omitempty"`
	Base uint64 `json:"b,omitempty"`
}

// published is a message as the script publishes it, and as the stream
// holds it but for its authorship.
type published struct {
	Seq      uint64 `json:"s"`
	Time     string `json:"t"`
	User     string `json:"u"`
	Text     string `json:"x"`
	Verified string `json:"v"`
	// An action's kind ("edit", "delete"), target id and "1" for a
	// moderator's delete.
	Action    string `json:"a,omitempty"`
	Target    string `json:"g,omitempty"`
	Moderator string `json:"m,omitempty"`
}

// The names of the actions in the stream and its notices.
var actionNames = map[rooms.Action]string{rooms.ActionEdit: "edit", rooms.ActionDelete: "delete"}

func (h *history) Epoch() string  { return h.epoch }
func (h *history) Last() uint64   { return h.last }
func (h *history) Oldest() uint64 { return h.last + 1 - min(h.last, uint64(h.capacity)) }

func (h *history) Follow(notify func()) {
	h.mu.Lock()
	h.notify = notify
	pending := len(h.heard) > 0 || h.resync
	h.mu.Unlock()
	if pending {
		notify()
	}
}

// hear takes a payload from the room's channel, or "" for a confirmed
// subscription, and tells the Manager.
func (h *history) hear(payload string) {
	h.mu.Lock()
	if payload == "" {
		h.resync = true
	} else {
		var n notice
		if json.Unmarshal([]byte(payload), &n) != nil {
			// Not ours: read the stream rather than trust it.
			h.resync = true
		} else {
			h.heard = append(h.heard, n)
		}
	}
	h.mu.Unlock()
	h.notifyNow()
}

// notifyNow tells the Manager that Catch has news. It takes h.mu.
func (h *history) notifyNow() {
	h.mu.Lock()
	notify := h.notify
	h.mu.Unlock()
	if notify != nil {
		notify()
	}
}

// Depth lets submits that come while a script call waits for Redis go out
// at once rather than wait for its round trip: the script names the
// sequence numbers, and Catch puts the batches in order.
func (h *history) Depth() int { return pipelineDepth }

// pipelineDepth is how many script calls of a room may be under way at
// once.
const pipelineDepth = 4

// appendCall is one script call of Append, begun by Start: Wait runs it
// with the room unlocked, Finish takes its answer.
type appendCall struct {
	h       *history
	n       uint64 // h.started when it started
	entries []rooms.Entry
	keys    []string
	args    []any
	res     []any
	err     error
}

// Start prepares the script call that stores entries. The Manager lets
// the next batch start before this one finishes: each gets the sequence
// numbers that the script gives it, and Catch puts them in order.
func (h *history) Start(ctx context.Context, entries []rooms.Entry) rooms.Call {
	// The script compares what this history knows stored with what
	// Redis holds: less there means Redis lost messages.
	known := h.last
	for _, m := range h.own {
		if epoch, seq, _ := rooms.ParseID(m.ID); epoch == h.epoch {
			known = max(known, seq)
		}
	}
	keyNames, args := h.script(ctx, entries, known)
	h.started++
	h.calls = append(h.calls, h.started)
	h.settle()
	return &appendCall{h: h, n: h.started, entries: entries, keys: keyNames, args: args}
}

// script returns the keys and arguments of the script call that stores
// entries, from a history that knows the messages up to known stored.
func (h *history) script(ctx context.Context, entries []rooms.Entry, known uint64) ([]string, []any) {
	// Each call has a token of its own, under which the script keeps its
	// answer for a retry.
	token := h.keys.call + h.s.id + "-" + strconv.FormatUint(h.s.calls.Add(1), 36)
	keyNames := []string{h.keys.meta, h.keys.stream, token}
	args := make([]any, 0, 9+11*len(entries))
	// A room that this history knows to hold messages, but that Redis
	// lost (its idle TTL passed, or it was deleted and the notice has not
	// come yet), or may hold them (a call under way), is made again in an
	// epoch of its own: in the old one its sequence would start over,
	// taking ids that readers already have.
	create := h.epoch
	if h.last > 0 || len(h.own) > 0 || len(h.calls) > 0 {
		create = rooms.NewEpoch()
	}
	args = append(args, create, h.capacity, time.Duration(h.s.keyTTL.Load()).Milliseconds(), h.keys.channel, len(entries), h.s.idleTimeout().Milliseconds(), h.s.answerTTL(ctx).Milliseconds(), h.epoch, known)
	for _, e := range entries {
		m := e.Message
		keyIndex, sum := 0, ""
		if e.Key.Name != "" {
			keyNames = append(keyNames, h.keys.key+hex.EncodeToString(rooms.KeyDigest(e.Key)))
			keyIndex, sum = len(keyNames), hex.EncodeToString(rooms.ContentDigest(m))
		}
		// A message passes "" for each of an action's arguments, which
		// costs its call nothing.
		moderator := ""
		if m.IsAction() {
			moderator = flag(m.ByModerator)
		}
		args = append(args, strconv.FormatInt(m.Time.UnixMilli(), 10), m.User, m.Message, flag(m.Verified), keyIndex, sum,
			actionNames[m.Action], m.Target, moderator, m.Author.ClientKey, hex.EncodeToString([]byte(m.Author.SecretDigest)))
	}
	return keyNames, args
}

// moveOn has the room go on in a new epoch, as the script does when it
// finds that Redis lost messages: this history delivered messages up to
// known that Redis no longer holds, as after a failover or a restart that
// lost the last writes. It does so at once, rather than at this node's
// next submit, so that a submit from a node that never saw them gives
// their ids again at most until then, and this node delivers that one
// too. The script's notice brings the new epoch to every node.
func (h *history) moveOn(known uint64) {
	keyNames, args := h.script(context.Background(), nil, known)
	h.s.spawn(func() {
		ctx, cancel := context.WithTimeout(h.s.closing, h.s.timeout)
		err := h.s.append.Run(ctx, h.s.client, keyNames, args...).Err()
		cancel()
		if err != nil {
			// The next read of the room's position finds the loss
			// again.
			h.mu.Lock()
			h.resync = true
			h.mu.Unlock()
			h.notifyNow()
		}
	})
}

// running reports whether a script call that started no later than the
// n-th runs still.
func (h *history) running(n uint64) bool {
	return slices.ContainsFunc(h.calls, func(c uint64) bool { return c <= n })
}

// Wait runs the script call. It touches only the call and the client.
func (c *appendCall) Wait(ctx context.Context) {
	c.res, c.err = c.h.s.append.Run(ctx, c.h.s.client, c.keys, c.args...).Slice()
}

// Finish takes the script's answer: the entries' ids, or the keys that
// an earlier message holds, into the entries, and the stored messages into
// what Catch delivers.
func (c *appendCall) Finish() error {
	h, entries, res := c.h, c.entries, c.res
	defer h.settle()
	h.calls = slices.DeleteFunc(h.calls, func(n uint64) bool { return n == c.n })
	if c.err != nil {
		if h.gapSeen != 0 {
			// The Catch that this call's success would have
			// brought reads the gap instead.
			h.s.spawn(h.notifyNow)
		}
		return fmt.Errorf("appending to room %q in redis: %w", h.room, c.err)
	}
	if len(res) != 3+len(entries) {
		return fmt.Errorf("appending to room %q in redis: the script answered %d values for %d messages", h.room, len(res), len(entries))
	}
	epoch, _ := res[0].(string)
	from, _ := res[1].(string)
	base, _ := res[2].(int64)
	switch {
	case epoch == h.epoch:
	case from == h.epoch:
		// Redis may have lost messages this history has: the next
		// Catch takes the room's new epoch, as another node takes it from the
		// script's notice.
		h.mu.Lock()
		h.heard = append(h.heard, notice{Epoch: epoch, From: from, Base: uint64(base)})
		h.mu.Unlock()
	case h.last > 0 || len(h.own) > 0:
		// Deleted and made again elsewhere since this node opened
		// it: its subscribers follow the old epoch.
		h.stale = true
		h.epoch = epoch
	default:
		h.epoch = epoch
	}
	for i, v := range res[3:] {
		r, _ := v.([]any)
		if len(r) != 3 {
			return fmt.Errorf("appending to room %q in redis: malformed answer %v", h.room, v)
		}
		seq, _ := r[0].(int64)
		if seq == 0 {
			entries[i].Outcome = rooms.NoTarget
			continue
		}
		if prior, _ := r[1].(int64); prior != 0 {
			same, _ := r[2].(int64)
			entries[i].Decide(epoch, rooms.Recalled{Epoch: epoch, Seq: uint64(seq), Time: time.UnixMilli(prior), Same: same == 1})
			continue
		}
		entries[i].Message.ID = rooms.FormatID(epoch, uint64(seq))
		h.own = append(h.own, entries[i].Message)
	}
	return nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Catch merges what this node appended with what it heard and what reads
// of the stream brought, and returns the messages after Last that follow
// it with no gap, in order. A gap is read from the stream on a goroutine
// of the Store's, which notifies when it is done, so that a room waiting
// for Redis holds up neither the subscription connection nor its room's
// lock. The messages past a gap wait for it.
func (h *history) Catch() ([]rooms.Message, bool) {
	defer h.settle()
	h.mu.Lock()
	heard, fs := h.heard, h.fetched
	h.heard, h.fetched = nil, nil
	resync := h.resync
	h.resync = false
	h.mu.Unlock()

	gone := h.stale
	got := h.own
	h.own = nil
	for _, n := range heard {
		if n.From != "" && n.From == h.epoch {
			got = h.restart(n.Epoch, n.Base, got)
		}
		if n.Epoch == h.left {
			continue
		}
		if n.Epoch != h.epoch {
			if h.last > 0 || len(got) > 0 {
				gone = true
				continue
			}
			// Made on another node after this one opened it,
			// before anything was stored here: take its epoch.
			h.epoch = n.Epoch
		}
		if n.Deleted {
			gone = true
			continue
		}
		for _, p := range n.Msgs {
			got = append(got, p.message(h.epoch, h.room))
		}
	}
	if gone {
		h.stale = true
		return nil, true
	}
	target := h.last
	for _, m := range got {
		target = max(target, seqOf(m))
	}
	// Every sequence number up to complete is in got, delivered, or
	// no longer in the stream.
	complete := h.last
	for _, f := range fs {
		if got, target, complete, gone = h.merge(f, got, target, complete); gone {
			h.stale = true
			return nil, true
		}
		resync = resync || f.epoch != h.epoch
	}
	slices.SortFunc(got, func(a, b rooms.Message) int { return cmp.Compare(seqOf(a), seqOf(b)) })
	got = slices.CompactFunc(got, func(a, b rooms.Message) bool { return a.ID == b.ID })
	got = slices.DeleteFunc(got, func(m rooms.Message) bool { return seqOf(m) <= h.last })
	next := h.last + 1
	n := 0
	for ; n < len(got); n++ {
		seq := seqOf(got[n])
		if seq != next && seq > complete+1 {
			break
		}
		next = seq + 1
	}
	// What the stream no longer holds fell out of the history and cannot
	// be delivered, as on a single node.
	h.last = max(next-1, min(complete, target))
	h.own = slices.Clone(got[n:])
	switch {
	case h.last == target:
		h.gapSeen = 0
	case h.gapSeen == 0 || h.gapFrom != h.last:
		// A new gap, or past the old one into another.
		h.gapSeen, h.gapFrom = h.started, h.last
	}
	// A gap that a script call of this node's, started before the gap
	// was seen, may yet fill is not read: that call's Finish brings
	// another Catch.
	if resync || h.last < target && !h.running(h.gapSeen) {
		h.fetchLater(h.last, target, resync)
	}
	return got[:n], false
}

// Sync reads the room's position and the messages up to it after the last
// one the room's lock left delivered, and when the room went on in an
// epoch this history has yet to take, made elsewhere or after Redis lost
// messages, reads that epoch too, for the next Catch.
func (h *history) Sync(ctx context.Context) error {
	h.mu.Lock()
	epoch, last, started, idle := h.seen.epoch, h.seen.last, h.seen.started, h.seen.idle
	h.mu.Unlock()
	f, err := h.fetch(ctx, epoch, last, last, true)
	if err != nil {
		return err
	}
	f.started, f.idle = started, idle
	fs := []*fetched{f}
	if f.found && f.roomEpoch != epoch && (last == 0 || f.roomFrom == epoch) {
		next, err := h.fetch(ctx, f.roomEpoch, 0, f.roomLast, true)
		if err != nil {
			return err
		}
		next.started, next.idle = started, idle
		fs = append(fs, next)
	}
	h.mu.Lock()
	h.fetched = append(h.fetched, fs...)
	h.mu.Unlock()
	return nil
}

// merge takes a read of Redis into what Catch holds: the messages read, and
// the room's position when the read asked for it. gone reports a room
// deleted, or deleted and made again, elsewhere.
func (h *history) merge(f *fetched, got []rooms.Message, target, complete uint64) ([]rooms.Message, uint64, uint64, bool) {
	if f.epoch != h.epoch {
		// Read for an epoch this history has since left.
		return got, target, complete, false
	}
	if f.meta {
		switch {
		case !f.found:
			// Deleted, and the notice lost with a connection.
			if h.last > 0 && f.idle && f.started == h.started {
				return nil, 0, 0, true
			}
		case f.roomFrom != "" && f.roomFrom == h.epoch:
			// Went on in a new epoch, which the next read is in.
			got = h.restart(f.roomEpoch, f.roomBase, got)
			return got, f.roomLast, h.last, false
		case f.roomEpoch != h.epoch:
			if h.last > 0 || len(got) > 0 {
				return nil, 0, 0, true
			}
			// Made elsewhere before anything was stored here; the
			// next read is in its epoch.
			h.epoch = f.roomEpoch
			return got, f.roomLast, complete, false
		default:
			if f.roomLast < f.after {
				// Redis holds fewer messages of the epoch than
				// this node had delivered when it asked.
				h.moveOn(f.after)
			}
			target = max(target, f.roomLast)
		}
	}
	return append(got, f.msgs...), max(target, f.upto), max(complete, f.upto), false
}

// restart takes the new epoch that the room went on in, from the message
// base, when Redis may have lost messages (see append.lua), and drops what
// got holds of the old one: the Manager ends the streams that followed it.
// The messages up to base are history in the new epoch, as on a node that
// opens the room.
func (h *history) restart(epoch string, base uint64, got []rooms.Message) []rooms.Message {
	h.left, h.epoch, h.last, h.gapSeen = h.epoch, epoch, base, 0
	return slices.DeleteFunc(got, func(m rooms.Message) bool {
		e, _, _ := rooms.ParseID(m.ID)
		return e != epoch
	})
}

// fetched is what fetch read.
type fetched struct {
	epoch string // the history's when it asked
	// meta is set when the room's position was asked for: found, with
	// roomEpoch and roomLast, when Redis holds the room, and roomFrom, the
	// epoch it went on from when Redis may have lost messages ("" for
	// none), from roomBase.
	meta, found         bool
	roomEpoch, roomFrom string
	roomLast, roomBase  uint64
	// started is the history's script calls started when it asked, and
	// idle is set when none was under way: a room not found by a read
	// that a call of this node may have overtaken is not a deleted room.
	started uint64
	idle    bool
	after   uint64 // the last message the history had delivered
	upto    uint64 // every message up to this one was read
	msgs    []rooms.Message
}

// fetch reads the messages in (after, upto] of the stream, and with meta
// the room's position first, reading up to its last message. It touches
// none of h's fields that Catch and Append change, so it may run outside
// the room's lock.
func (h *history) fetch(ctx context.Context, epoch string, after, upto uint64, meta bool) (*fetched, error) {
	f := &fetched{epoch: epoch, meta: meta, after: after, upto: after}
	if meta {
		vals, err := h.s.client.HMGet(ctx, h.keys.meta, "epoch", "last", "from", "base").Result()
		if err != nil {
			return nil, fmt.Errorf("reading room %q from redis: %w", h.room, err)
		}
		f.roomLast, _ = strconv.ParseUint(fmt.Sprint(vals[1]), 10, 64)
		f.roomFrom, _ = vals[2].(string)
		f.roomBase, _ = strconv.ParseUint(fmt.Sprint(vals[3]), 10, 64)
		if f.roomEpoch, f.found = vals[0].(string); !f.found || f.roomEpoch != epoch {
			return f, nil
		}
		upto = max(upto, f.roomLast)
	}
	// Not bounded by this node's history: the stream holds what the
	// nodes that append keep, which may be more (their history is
	// larger, or this node's was made smaller), and a read of only its
	// first messages would skip the rest of the gap.
	msgs, err := h.read(ctx, epoch, after, upto, int(upto-min(after, upto)))
	if err != nil {
		return nil, err
	}
	f.msgs, f.upto = msgs, max(after, upto)
	return f, nil
}

// fetchLater runs fetch on a goroutine of the Store's, unless one runs
// already, and notifies when its messages are there for Catch. A failed
// read is tried again after retryDelay.
func (h *history) fetchLater(after, upto uint64, meta bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fetching {
		// The running read's notice brings a Catch that asks again.
		h.resync = h.resync || meta
		return
	}
	epoch, started, idle := h.epoch, h.started, len(h.calls) == 0
	h.fetching = h.s.spawn(func() {
		ctx, cancel := context.WithTimeout(h.s.closing, h.s.timeout)
		f, err := h.fetch(ctx, epoch, after, upto, meta)
		cancel()
		if err == nil {
			f.started, f.idle = started, idle
		}
		if err != nil {
			select {
			case <-time.After(retryDelay):
			case <-h.s.closing.Done():
				return
			}
		}
		h.mu.Lock()
		h.fetching = false
		if err != nil {
			h.resync = true
		} else {
			h.fetched = append(h.fetched, f)
		}
		notify := h.notify
		h.mu.Unlock()
		if notify != nil {
			notify()
		}
	})
}

// retryDelay is how long a history waits to read a gap again after a
// failed read.
const retryDelay = time.Second

func seqOf(m rooms.Message) uint64 {
	_, seq, _ := rooms.ParseID(m.ID)
	return seq
}

func (p published) message(epoch, room string) rooms.Message {
	m := rooms.Message{
		ID:       rooms.FormatID(epoch, p.Seq),
		Room:     room,
		User:     p.User,
		Message:  p.Text,
		Time:     unixMilli(p.Time),
		Verified: p.Verified == "1",
	}
	if p.Action != "" {
		for a, name := range actionNames {
			if name == p.Action {
				m.Action = a
			}
		}
		m.Target, m.ByModerator = p.Target, p.Moderator == "1"
	}
	return m
}

// unixMilli reads a time the script wrote, in Unix milliseconds.
func unixMilli(text string) time.Time {
	ms, _ := strconv.ParseInt(text, 10, 64)
	return time.UnixMilli(ms).UTC()
}

// read returns up to limit messages of the stream with sequence numbers in
// (after, upto], with ids in epoch.
func (h *history) read(ctx context.Context, epoch string, after, upto uint64, limit int) ([]rooms.Message, error) {
	if limit <= 0 || after >= upto {
		return nil, nil
	}
	entries, err := h.s.client.XRangeN(ctx, h.keys.stream, strconv.FormatUint(after+1, 10)+"-0", strconv.FormatUint(upto, 10)+"-0", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading room %q from redis: %w", h.room, err)
	}
	out := make([]rooms.Message, 0, len(entries))
	for _, e := range entries {
		m, err := h.entry(epoch, e)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// entry returns the stream entry e, with an id in epoch.
func (h *history) entry(epoch string, e redis.XMessage) (rooms.Message, error) {
	seqText, _, _ := strings.Cut(e.ID, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return rooms.Message{}, fmt.Errorf("reading room %q from redis: entry id %q: %w", h.room, e.ID, err)
	}
	field := func(name string) string { v, _ := e.Values[name].(string); return v }
	p := published{Seq: seq, Time: field("t"), User: field("u"), Text: field("x"), Verified: field("v"),
		Action: field("a"), Target: field("g"), Moderator: field("m")}
	m := p.message(epoch, h.room)
	m.Deleted = field("d") == "1"
	if edited := field("e"); edited != "" {
		m.Edited = unixMilli(edited)
	}
	digest, _ := hex.DecodeString(field("h"))
	m.Author = rooms.Authorship{ClientKey: field("k"), SecretDigest: string(digest)}
	return m, nil
}

// Lookup reads the stream's entry seq, in the epoch the room's lock left.
func (h *history) Lookup(ctx context.Context, seq uint64) (rooms.Message, bool, error) {
	h.mu.Lock()
	epoch := h.seen.epoch
	h.mu.Unlock()
	id := strconv.FormatUint(seq, 10) + "-0"
	entries, err := h.s.client.XRange(ctx, h.keys.stream, id, id).Result()
	if err != nil {
		return rooms.Message{}, false, fmt.Errorf("reading room %q from redis: %w", h.room, err)
	}
	if len(entries) != 1 {
		return rooms.Message{}, false, nil
	}
	m, err := h.entry(epoch, entries[0])
	return m, err == nil, err
}

func (h *history) Read(ctx context.Context, after, upto uint64, limit int) ([]rooms.Message, error) {
	h.mu.Lock()
	epoch := h.seen.epoch
	h.mu.Unlock()
	return h.read(ctx, epoch, after, upto, limit)
}

func (h *history) Resize(ctx context.Context, capacity int) error {
	if capacity < h.capacity {
		if err := h.s.client.XTrimMaxLen(ctx, h.keys.stream, int64(capacity)).Err(); err != nil {
			return fmt.Errorf("trimming room %q in redis: %w", h.room, err)
		}
	}
	h.capacity = capacity
	return nil
}

// Drop deletes the room's messages and position, unless another node did
// already, and tells the other nodes, whose streams of the room end. The
// Manager calls it only for a delete: an idle room is let go with Close,
// and Redis expires it after IdleTTL.
func (h *history) Drop(ctx context.Context) error {
	h.unlisten()
	if h.stale {
		return nil
	}
	payload, _ := json.Marshal(notice{Epoch: h.epoch, Deleted: true})
	_, err := h.s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, h.keys.meta, h.keys.stream)
		p.Publish(ctx, h.keys.channel, payload)
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting room %q from redis: %w", h.room, err)
	}
	return nil
}

// Expire lets an idle room go here as Close does: Redis expires it once
// no node posts to it for the idle timeout (see SetIdleTimeout).
func (h *history) Expire(context.Context) error { return h.Close() }

func (h *history) Close() error {
	h.unlisten()
	return nil
}

// unlisten stops routing the room's channel here and unsubscribes, unless
// a newer history of the room took the channel over.
func (h *history) unlisten() {
	h.s.mu.Lock()
	mine := h.s.listeners[h.keys.channel] == h
	if mine {
		delete(h.s.listeners, h.keys.channel)
	}
	h.s.mu.Unlock()
	if mine {
		// Unsubscribing is a write on the subscription connection; it
		// need not hold up the room.
		h.s.spawn(func() { h.s.unsubscribe(h.keys.channel) })
	}
}

// unsubscribe leaves channel unless a history opened since listens to it.
func (s *Store) unsubscribe(channel string) {
	s.subscribing.Lock()
	defer s.subscribing.Unlock()
	s.mu.Lock()
	taken := s.listeners[channel] != nil
	s.mu.Unlock()
	if !taken {
		ctx, cancel := context.WithTimeout(s.closing, s.timeout)
		defer cancel()
		_ = s.ps.Unsubscribe(ctx, channel)
	}
}

// Recall looks k up among the keys Redis keeps for the room, which name
// the epoch of their message: the Manager compares it with the room's.
func (h *history) Recall(ctx context.Context, k rooms.Key, m rooms.Message) (rooms.Recalled, error) {
	rec, err := h.s.client.Get(ctx, h.keys.key+hex.EncodeToString(rooms.KeyDigest(k))).Result()
	if errors.Is(err, redis.Nil) {
		return rooms.Recalled{}, nil
	}
	if err != nil {
		return rooms.Recalled{}, fmt.Errorf("reading keys of room %q from redis: %w", h.room, err)
	}
	var r keyRecord
	if json.Unmarshal([]byte(rec), &r) != nil {
		return rooms.Recalled{}, nil
	}
	return rooms.Recalled{Epoch: r.Epoch, Seq: r.Seq, Time: time.UnixMilli(r.Time).UTC(), Same: r.Sum == hex.EncodeToString(rooms.ContentDigest(m))}, nil
}

// keyRecord is what the script keeps under an idempotency key.
type keyRecord struct {
	Epoch string `json:"e"`
	Seq   uint64 `json:"s"`
	Time  int64  `json:"t"`
	Sum   string `json:"h"`
}

// Interface guards
var (
	_ rooms.Store   = (*Store)(nil)
	_ rooms.History = (*history)(nil)
)
