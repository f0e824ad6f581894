package rooms

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"
)

// Defaults of the idempotency key store.
const (
	// DefaultKeyWindow is how long a submit's Idempotency-Key is
	// remembered.
	DefaultKeyWindow = 10 * time.Minute
	// DefaultMaxKeys bounds the keys remembered across all rooms; past it
	// the oldest are forgotten early. A 64-byte key costs about 240 bytes
	// (BenchmarkKeyMemory), so a full store holds about 24 MB.
	DefaultMaxKeys = 100000
	// maxKeysPerScope bounds the keys one author has remembered at once,
	// so that one author posting fast cannot push everyone else's keys out
	// of the budget; past it, that author's new keys are not remembered
	// until older ones expire. 1000 in a 10-minute window is 100 keyed
	// posts a minute.
	maxKeysPerScope = 1000
)

// keyStore remembers idempotency keys for every room under one budget. A
// key belongs to its author: two authors who pick the same key never meet.
// It keeps only what rebuilding the first answer needs: the message's id
// and time, and a hash of the user, text and verification it was posted
// with. A repeat carries the same, so the message is whole again without
// the store holding its text.
//
// Its lock is taken inside a room's lock, never the other way round.
type keyStore struct {
	mu       sync.Mutex
	byKey    map[roomKey]keyEntry
	perScope map[uint64]int // keys remembered per author
	order    []keyRef       // oldest first from head on
	head     int
}

// roomKey names a key within its room and its author's scope; room shares
// the room's name string. The scope is kept as a hash: an identity may be
// long, and a key costs the same whoever sent it.
type roomKey struct {
	room  string
	scope uint64
	key   string
}

type keyEntry struct {
	epoch string // shares the room history's epoch string
	seq   uint64
	at    int64  // the message's time, in Unix milliseconds
	sum   uint64 // hash of user, text and verification
}

// keyRef is a key in the order it was remembered. at tells it apart from a
// newer entry under the same key, after the first expired.
type keyRef struct {
	k  roomKey
	at int64
}

func newKeyStore() *keyStore {
	return &keyStore{byKey: make(map[roomKey]keyEntry), perScope: make(map[uint64]int)}
}

// seed makes the hashes of this package random per process, so that no
// client can aim for a collision.
var seed = maphash.MakeSeed()

// keyOf names key, given by the author that scope names, in room.
func keyOf(room, scope, key string) roomKey {
	return roomKey{room: room, scope: maphash.String(seed, scope), key: key}
}

// sumOf hashes what a repeat must carry unchanged. The user's length goes
// first, so that no split of the same bytes into user and text collides.
func sumOf(p Post) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var head [binary.MaxVarintLen64 + 1]byte
	n := binary.PutUvarint(head[:], uint64(len(p.User)))
	if p.Verified {
		head[n] = 1
	}
	h.Write(head[:n+1])
	h.WriteString(p.User)
	h.WriteString(p.Text)
	return h.Sum64()
}

// get returns the entry of k when it is younger than window at now.
func (s *keyStore) get(k roomKey, now time.Time, window time.Duration) (keyEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byKey[k]
	if !ok || expired(e.at, now, window) {
		return keyEntry{}, false
	}
	return e, true
}

// put remembers k, forgetting the oldest keys when more than max would be
// kept; a new key of an author who has maxKeysPerScope is not remembered.
func (s *keyStore) put(k roomKey, e keyEntry, max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byKey[k]; !ok {
		if s.perScope[k.scope] >= maxKeysPerScope {
			return
		}
		for len(s.byKey) >= max && s.pop() {
		}
		s.perScope[k.scope]++
	}
	s.byKey[k] = e
	s.order = append(s.order, keyRef{k, e.at})
}

// sweep forgets every key older than window at now.
func (s *keyStore) sweep(now time.Time, window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.head < len(s.order) && expired(s.order[s.head].at, now, window) {
		s.pop()
	}
}

// pop forgets the oldest key, reporting false when there is none. s.mu must
// be held.
func (s *keyStore) pop() bool {
	if s.head == len(s.order) {
		return false
	}
	ref := s.order[s.head]
	s.order[s.head] = keyRef{}
	s.head++
	if e, ok := s.byKey[ref.k]; ok && e.at == ref.at {
		delete(s.byKey, ref.k)
		if s.perScope[ref.k.scope]--; s.perScope[ref.k.scope] == 0 {
			delete(s.perScope, ref.k.scope)
		}
	}
	// Reclaim the consumed front once it is half the slice.
	if s.head > len(s.order)/2 {
		s.order = append(s.order[:0:0], s.order[s.head:]...)
		s.head = 0
	}
	return true
}

// len returns how many keys are remembered.
func (s *keyStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}

func expired(at int64, now time.Time, window time.Duration) bool {
	return now.UnixMilli()-at >= window.Milliseconds()
}
