package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// The census: each node keeps a hash, node:{id}, with a field r:<room> per
// room it has open, holding who follows the room there, and a field v, a
// version bumped with every change. The hash expires censusTTL after the
// node last refreshed it, so a node that dies drops out of every other
// node's counts and presence within censusTTL; one that stops deletes it at
// once. The set nodes names the nodes that may hold a hash.
//
// A room's keys expire after the idle timeout with no message, unless a
// node follows the room: each node renews the keys of the rooms it has
// streams in, and their place in the directory, every quarter of the idle
// timeout, with its report. So a room is dropped as idle only when no node
// has a stream to it.
//
// The directory: the sorted set rooms names every room that got a message,
// scored with the time of the last one a node reported, so that every node
// lists the rooms no node has open. A node adds the rooms whose newest id
// changed with its next report, one ZADD for all of them; the rooms whose
// meta hash expired or was deleted are taken out as they are listed.
const (
	censusTTL     = 5 * time.Second
	censusRefresh = time.Second
)

// census is a Store's part in it. Only the Manager's census goroutine uses
// it, so it needs no lock.
type census struct {
	id        string
	written   map[string]rooms.Headcount // this node's rooms as it last wrote them; nil: write all
	version   int64
	refreshed time.Time
	nodes     map[string]*nodeReport     // the other nodes, by id
	indexed   map[string]string          // the newest id of each room as last added to the directory
	renewed   map[string]time.Time       // when the keys of each room followed here were last renewed
	heard     time.Time                  // when the other nodes' reports were last read
	others    map[string]rooms.Headcount // nodes summed; nil when one changed since
}

// nodeReport is another node's hash as last read.
type nodeReport struct {
	version string
	rooms   map[string]rooms.Headcount
}

// headcount is a rooms.Headcount as a node's hash keeps it.
type headcount struct {
	Subscribers int            `json:"s"`
	Anonymous   int            `json:"a,omitempty"`
	Users       map[string]int `json:"u,omitempty"`
}

func (s *Store) nodesKey() string         { return s.prefix + "nodes" }
func (s *Store) directoryKey() string     { return s.prefix + "rooms" }
func (s *Store) nodeKey(id string) string { return s.prefix + "node:{" + id + "}" }

// Exchange writes what changed in this node's report, or refreshes its TTL
// every censusRefresh, and reads the reports of the other nodes whose
// version changed: one round trip to read when nothing changed, a second
// when something did, and one to write. It implements rooms.Census.
func (s *Store) Exchange(ctx context.Context, here map[string]rooms.Headcount) (map[string]rooms.Headcount, error) {
	c := &s.census
	if c.id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails
		c.id = hex.EncodeToString(b[:])
		c.nodes, c.indexed, c.renewed = map[string]*nodeReport{}, map[string]string{}, map[string]time.Time{}
	}
	if err := s.report(ctx, here); err != nil {
		return s.unheard(err)
	}
	if err := s.readOthers(ctx); err != nil {
		return s.unheard(err)
	}
	c.heard = time.Now()
	if c.others != nil {
		return c.others, nil
	}
	// Summed again only when a node's report changed: the Manager does
	// not change the map it is given.
	others := map[string]rooms.Headcount{}
	for _, n := range c.nodes {
		for room, h := range n.rooms {
			sum := others[room]
			sum.Subscribers += h.Subscribers
			sum.Anonymous += h.Anonymous
			for u, k := range h.Users {
				if sum.Users == nil {
					sum.Users = map[string]int{}
				}
				sum.Users[u] += k
			}
			others[room] = sum
		}
	}
	c.others = others
	return others, nil
}

// unheard answers an exchange that failed: with its error while the other
// nodes' reports are recent, so that the Manager keeps them, and after
// censusTTL with no other node, as their own reports would have expired by
// then had they died.
func (s *Store) unheard(err error) (map[string]rooms.Headcount, error) {
	if time.Since(s.census.heard) < censusTTL {
		return nil, err
	}
	clear(s.census.nodes)
	s.census.others = nil
	return map[string]rooms.Headcount{}, nil
}

// report writes the fields of this node's hash that changed since the last
// report, all of them when the hash was lost, or only renews its TTL.
func (s *Store) report(ctx context.Context, here map[string]rooms.Headcount) error {
	c := &s.census
	var set []any
	var gone []string
	var active []redis.Z
	var renew []string
	idle := s.idleTimeout()
	at := time.Now()
	now := float64(at.UnixMilli())
	for room, h := range here {
		// Compared, not encoded: most rooms change in no report.
		if w, ok := c.written[room]; !ok || w.Version != h.Version || h.Version == 0 && (w.Subscribers != h.Subscribers || w.Anonymous != h.Anonymous || !maps.Equal(w.Users, h.Users)) {
			v, _ := json.Marshal(headcount{Subscribers: h.Subscribers, Anonymous: h.Anonymous, Users: h.Users}) // ints and strings: it cannot fail
			set = append(set, "r:"+room, string(v))
		}
		followed := idle > 0 && h.Subscribers > 0 && h.LastID != "" && at.Sub(c.renewed[room]) >= idle/4
		if followed {
			renew = append(renew, room)
		}
		if h.LastID != "" && (c.indexed[room] != h.LastID || followed) {
			active = append(active, redis.Z{Score: now, Member: room})
		}
	}
	for room := range c.written {
		if _, ok := here[room]; !ok {
			gone = append(gone, "r:"+room)
			delete(c.indexed, room)
			delete(c.renewed, room)
		}
	}
	if len(set)+len(gone)+len(active) == 0 && time.Since(c.refreshed) < censusRefresh {
		return nil
	}
	key := s.nodeKey(c.id)
	full := c.written == nil
	var existed *redis.BoolCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		existed = p.PExpire(ctx, key, censusTTL)
		if full {
			p.Del(ctx, key)
		}
		if len(set)+len(gone) > 0 || full {
			c.version++
			p.HSet(ctx, key, append(set, "v", c.version)...)
		}
		if len(gone) > 0 {
			p.HDel(ctx, key, gone...)
		}
		p.PExpire(ctx, key, censusTTL)
		p.SAdd(ctx, s.nodesKey(), c.id)
		if len(active) > 0 {
			p.ZAdd(ctx, s.directoryKey(), active...)
		}
		for _, room := range renew {
			// A room that expired or was deleted is not made again.
			k := s.keysOf(room)
			p.PExpire(ctx, k.meta, idle)
			p.PExpire(ctx, k.stream, idle)
		}
		return nil
	})
	if err != nil {
		c.written = nil
		return fmt.Errorf("reporting to redis: %w", err)
	}
	for _, z := range active {
		room := z.Member.(string)
		c.indexed[room] = here[room].LastID
	}
	for _, room := range renew {
		c.renewed[room] = at
	}
	c.refreshed = time.Now()
	if !full && !existed.Val() {
		// Expired while this node was cut off, or Redis lost it: the
		// next report writes it whole.
		c.written = nil
		return nil
	}
	c.written = here
	return nil
}

// readOthers reads the other nodes' versions, then the hashes of those that
// changed or are new, and forgets the nodes whose hash expired.
func (s *Store) readOthers(ctx context.Context) error {
	c := &s.census
	var members *redis.StringSliceCmd
	versions := map[string]*redis.StringCmd{}
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		members = p.SMembers(ctx, s.nodesKey())
		for id := range c.nodes {
			versions[id] = p.HGet(ctx, s.nodeKey(id), "v")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("reading the census from redis: %w", err)
	}
	live := map[string]bool{}
	for _, id := range members.Val() {
		live[id] = id != c.id
	}
	var fetch []string
	for id, n := range c.nodes {
		v, err := versions[id].Result()
		switch {
		case errors.Is(err, redis.Nil) || !live[id]:
			delete(c.nodes, id)
			c.others = nil
		case v != n.version:
			fetch = append(fetch, id)
		}
	}
	for id, ok := range live {
		if ok && c.nodes[id] == nil {
			fetch = append(fetch, id)
		}
	}
	if len(fetch) == 0 {
		return nil
	}
	c.others = nil
	hashes := make([]*redis.MapStringStringCmd, len(fetch))
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range fetch {
			hashes[i] = p.HGetAll(ctx, s.nodeKey(id))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the census from redis: %w", err)
	}
	var dead []any
	for i, id := range fetch {
		fields := hashes[i].Val()
		if len(fields) == 0 {
			// Its hash expired: it died without leaving.
			delete(c.nodes, id)
			dead = append(dead, id)
			continue
		}
		n := &nodeReport{version: fields["v"], rooms: make(map[string]rooms.Headcount, len(fields))}
		for f, v := range fields {
			room, ok := strings.CutPrefix(f, "r:")
			var h headcount
			if ok && json.Unmarshal([]byte(v), &h) == nil {
				n.rooms[room] = rooms.Headcount{Subscribers: h.Subscribers, Anonymous: h.Anonymous, Users: h.Users}
			}
		}
		c.nodes[id] = n
	}
	if len(dead) > 0 {
		// A live node adds itself back with its next refresh.
		if err := s.client.SRem(ctx, s.nodesKey(), dead...).Err(); err != nil {
			return fmt.Errorf("updating the census in redis: %w", err)
		}
	}
	return nil
}

// Directory lists the rooms that hold messages, with their newest ids, and
// takes out those that expired or were deleted.
func (s *Store) Directory(ctx context.Context) (map[string]string, error) {
	var names *redis.StringSliceCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if idle := s.idleTimeout(); idle > 0 {
			p.ZRemRangeByScore(ctx, s.directoryKey(), "-inf", strconv.FormatInt(time.Now().Add(-idle).UnixMilli(), 10))
		}
		names = p.ZRange(ctx, s.directoryKey(), 0, -1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing rooms in redis: %w", err)
	}
	metas := make([]*redis.SliceCmd, len(names.Val()))
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, room := range names.Val() {
			metas[i] = p.HMGet(ctx, s.keysOf(room).meta, "epoch", "last")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing rooms in redis: %w", err)
	}
	out := make(map[string]string, len(metas))
	var gone []any
	for i, room := range names.Val() {
		vals := metas[i].Val()
		epoch, ok := vals[0].(string)
		last, _ := strconv.ParseUint(fmt.Sprint(vals[1]), 10, 64)
		if !ok || last == 0 {
			gone = append(gone, room)
			continue
		}
		out[room] = rooms.FormatID(epoch, last)
	}
	if len(gone) > 0 {
		if err := s.client.ZRem(ctx, s.directoryKey(), gone...).Err(); err != nil {
			return nil, fmt.Errorf("listing rooms in redis: %w", err)
		}
	}
	return out, nil
}

// Leave deletes this node's report, so that the other nodes drop its
// counts and users at once rather than after censusTTL.
func (s *Store) Leave(ctx context.Context) error {
	c := &s.census
	if c.id == "" {
		return nil
	}
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.nodeKey(c.id))
		p.SRem(ctx, s.nodesKey(), c.id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("leaving the census in redis: %w", err)
	}
	return nil
}

// Interface guards
var (
	_ rooms.Census = (*Store)(nil)
)
