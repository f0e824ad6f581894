package redisstore

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Bans live in keys that share the hash tag {*}, which no room name can
// be, so that one script puts or lifts a ban in Redis Cluster too:
//
//	<prefix>bans:{*}:all          ids of every ban, scored by expiry (ms)
//	<prefix>bans:{*}:room:<room>  ids of the room's bans, scored alike
//	<prefix>bans:{*}:ban:<id>     the ban's JSON, expiring with it
//	<prefix>bans:{*}:version      e: the epoch of the count, v: the count
//	<prefix>bans:{*}:pub          the channel of puts and lifts
//
// Each node holds every ban in force in memory (a rooms.BanList), read at
// start and whenever its subscription is established again, and kept
// current by the channel: each put or lift counts the version up and
// publishes it, and a node that hears a version it did not expect, having
// missed one, reads the bans again.
type banKeys struct {
	base, all, version, channel string
}

func newBanKeys(prefix string) banKeys {
	base := prefix + "bans:{*}:"
	return banKeys{base: base, all: base + "all", version: base + "version", channel: base + "pub"}
}

func (k banKeys) room(room string) string { return k.base + "room:" + room }
func (k banKeys) ban(id string) string    { return k.base + "ban:" + id }

var (
	//go:embed put_ban.lua
	putBanScript string
	//go:embed lift_ban.lua
	liftBanScript string

	putBan  = redis.NewScript(putBanScript)
	liftBan = redis.NewScript(liftBanScript)
)

// banNotice is what the bans' channel carries: a put or a lift, and the
// version it made.
type banNotice struct {
	Epoch   string     `json:"e"`
	Version int64      `json:"v"`
	Put     *rooms.Ban `json:"put,omitempty"`
	Lift    string     `json:"lift,omitempty"`
}

// banCopy is a node's copy of the bans.
type banCopy struct {
	s    *Store
	keys banKeys
	list rooms.BanList

	mu sync.Mutex
	// epoch and version are those of the bans the list holds.
	epoch   string
	version int64
	// reading is set while the bans are read again; heard keeps the
	// notices that come meanwhile, to apply on what is read, and again
	// asks for one more read.
	reading bool
	again   bool
	heard   []banNotice
	// loaded is closed once the bans were first read.
	loaded     chan struct{}
	loadedOnce sync.Once
}

// maxHeard bounds the notices kept during a read: past it, the bans are
// read once more instead.
const maxHeard = 1024

func newBanCopy(s *Store) *banCopy {
	return &banCopy{s: s, keys: newBanKeys(s.prefix), loaded: make(chan struct{})}
}

// hear takes a payload of the bans' channel, or "" for a confirmed
// subscription, after which the bans are read again: notices may have
// been missed while it was down.
func (c *banCopy) hear(payload string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n banNotice
	if payload == "" || json.Unmarshal([]byte(payload), &n) != nil {
		c.readLater()
		return
	}
	if c.reading {
		if len(c.heard) < maxHeard {
			c.heard = append(c.heard, n)
		} else {
			c.again = true
		}
		return
	}
	if !c.follow(n) {
		c.readLater()
	}
}

// follow applies n when it is the next version, or already held, and
// reports whether it was; c.mu must be held.
func (c *banCopy) follow(n banNotice) bool {
	switch {
	case n.Epoch != c.epoch || n.Version > c.version+1:
		return false
	case n.Version == c.version+1:
		c.apply(n)
		c.version = n.Version
	}
	return true
}

// apply puts or lifts what n says in the list.
func (c *banCopy) apply(n banNotice) {
	if n.Put != nil {
		c.list.Put(*n.Put)
	}
	if n.Lift != "" {
		c.list.Remove(n.Lift)
	}
	c.list.Remove(c.list.Expired(time.Now())...)
}

// readLater reads the bans again on a goroutine of the Store's, unless a
// read runs already; c.mu must be held.
func (c *banCopy) readLater() {
	if c.reading {
		c.again = true
		return
	}
	c.reading, c.heard = true, nil
	if !c.s.spawn(c.reread) {
		c.reading = false
	}
}

// reread reads the bans until a read is followed by every notice heard
// meanwhile, and retries a failed read after retryDelay.
func (c *banCopy) reread() {
	for {
		ctx, cancel := context.WithTimeout(c.s.closing, c.s.timeout)
		epoch, version, bans, err := c.read(ctx)
		cancel()
		if err != nil {
			select {
			case <-time.After(retryDelay):
				continue
			case <-c.s.closing.Done():
				return
			}
		}
		c.mu.Lock()
		c.list.Replace(bans)
		c.epoch, c.version = epoch, version
		caught := !c.again
		for _, n := range c.heard {
			caught = caught && c.follow(n)
		}
		c.heard, c.again = nil, false
		if caught {
			c.reading = false
		}
		c.mu.Unlock()
		if caught {
			c.loadedOnce.Do(func() { close(c.loaded) })
			return
		}
	}
}

// read returns the bans in force and the version they are of. The version
// is read first: a put or lift that comes before the bans are read is in
// what is read, and its notice, of a later version, is applied again
// harmlessly.
func (c *banCopy) read(ctx context.Context) (epoch string, version int64, bans []rooms.Ban, err error) {
	vals, err := c.s.client.HMGet(ctx, c.keys.version, "e", "v").Result()
	if err != nil {
		return "", 0, nil, fmt.Errorf("reading the version of bans from redis: %w", err)
	}
	epoch, _ = vals[0].(string)
	version, _ = strconv.ParseInt(fmt.Sprint(vals[1]), 10, 64)
	bans, err = c.inForce(ctx, c.keys.all)
	return epoch, version, bans, err
}

// inForce reads the bans in force whose ids the sorted set key holds.
func (c *banCopy) inForce(ctx context.Context, key string) ([]rooms.Ban, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ids, err := c.s.client.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("reading bans from redis: %w", err)
	}
	bans := make([]rooms.Ban, 0, len(ids))
	// One MGET of a few hundred keys at a time: the keys share a slot,
	// and no answer grows too large.
	for chunk := range slices.Chunk(ids, 500) {
		names := make([]string, len(chunk))
		for i, id := range chunk {
			names[i] = c.keys.ban(id)
		}
		vals, err := c.s.client.MGet(ctx, names...).Result()
		if err != nil {
			return nil, fmt.Errorf("reading bans from redis: %w", err)
		}
		for _, v := range vals {
			text, ok := v.(string)
			if !ok {
				continue // expired or lifted since the ids were read
			}
			var b rooms.Ban
			if json.Unmarshal([]byte(text), &b) == nil {
				bans = append(bans, b)
			}
		}
	}
	return bans, nil
}

// expiryScore is b's expiry as the sorted sets score it.
func expiryScore(b rooms.Ban) string {
	if b.Expires.IsZero() {
		return "+inf"
	}
	return strconv.FormatInt(b.Expires.UnixMilli(), 10)
}

// WaitBans waits until the Store holds the bans Redis holds, as read once
// its subscription was first established: a node that serves posts
// before would let a banned author's through.
func (s *Store) WaitBans(ctx context.Context) error {
	select {
	case <-s.bans.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reading bans from redis: %w", ctx.Err())
	}
}

// PutBan keeps b in Redis, expiring with it, and holds it here at once;
// the other nodes hear of it on the bans' channel.
func (s *Store) PutBan(ctx context.Context, b rooms.Ban, limit int) (rooms.Ban, error) {
	text, err := json.Marshal(b)
	if err != nil {
		return rooms.Ban{}, fmt.Errorf("encoding ban: %w", err)
	}
	k := s.bans.keys
	err = putBan.Run(ctx, s.client, []string{k.all, k.room(b.Room), k.ban(b.ID), k.version},
		time.Now().UnixMilli(), expiryScore(b), b.ID, text, limit, k.channel, rooms.NewEpoch()).Err()
	switch {
	case err == redis.Nil:
		return rooms.Ban{}, rooms.ErrTooManyBans
	case err != nil:
		return rooms.Ban{}, fmt.Errorf("putting a ban in redis: %w", err)
	}
	s.bans.list.Put(b)
	return b, nil
}

// Bans reads the room's bans from Redis, which every node writes to.
func (s *Store) Bans(ctx context.Context, room string) ([]rooms.Ban, error) {
	bans, err := s.bans.inForce(ctx, s.bans.keys.room(room))
	if err != nil {
		return nil, err
	}
	rooms.SortBans(bans)
	return bans, nil
}

// LiftBan deletes the ban from Redis and forgets it here at once; the
// other nodes hear of it on the bans' channel.
func (s *Store) LiftBan(ctx context.Context, room, id string) error {
	k := s.bans.keys
	v, err := liftBan.Run(ctx, s.client, []string{k.all, k.room(room), k.ban(id), k.version},
		time.Now().UnixMilli(), id, k.channel, rooms.NewEpoch()).Int64()
	if err != nil {
		return fmt.Errorf("lifting ban %q in redis: %w", id, err)
	}
	if v == 0 {
		return rooms.ErrBanNotFound
	}
	s.bans.list.Remove(id)
	return nil
}

// Banned looks the subject up in the bans this node holds.
func (s *Store) Banned(room, subject string) (rooms.Ban, bool) {
	return s.bans.list.Banned(room, subject)
}
