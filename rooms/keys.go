package rooms

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"
)

// Defaults of the idempotency key index.
const (
	// DefaultKeyWindow is how long a submit's Idempotency-Key is
	// remembered.
	DefaultKeyWindow = 10 * time.Minute
	// DefaultMaxKeys bounds the keys remembered across all rooms; past it
	// the oldest are forgotten early. A 64-byte key costs about 240 bytes
	// (BenchmarkKeyMemory), so a full index holds about 24 MB.
	DefaultMaxKeys = 100000
	// maxKeysPerScope bounds the keys one author has remembered at once,
	// so that one author posting fast cannot push everyone else's keys out
	// of the budget; past it, that author's new keys are not remembered
	// until older ones expire. 1000 in a 10-minute window is 100 keyed
	// posts a minute.
	maxKeysPerScope = 1000
)

// KeyIndex remembers the idempotency keys of the local engine's rooms
// (LocalStore), in memory, under one budget: every key used since the
// engine started, whether or not its log keeps it. A key belongs to its author: two
// authors who pick the same key never meet. It keeps only what rebuilding
// the first answer needs: the message's sequence number and time, and a
// hash of the user, text and verification it was posted with. A repeat
// carries the same, so the message is whole again without the index
// holding its text.
//
// Its methods are safe for concurrent use: a history looks keys up with
// the room released and records them with the room locked.
type KeyIndex struct {
	mu       sync.Mutex
	window   time.Duration
	max      int
	byKey    map[roomKey]keyEntry
	perScope map[uint64]int // keys remembered per author
	order    []keyRef       // oldest first from head on
	head     int
	// sweeping is set while a timer is armed to forget expired keys.
	sweeping bool
}

// roomKey names a key within its room and its author's scope. The scope is
// kept as a hash: an identity may be long, and a key costs the same
// whoever sent it.
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

// NewKeyIndex returns an empty index with the default window and budget.
func NewKeyIndex() *KeyIndex {
	return &KeyIndex{window: DefaultKeyWindow, max: DefaultMaxKeys, byKey: make(map[roomKey]keyEntry), perScope: make(map[uint64]int)}
}

// SetWindow sets how long a key is remembered and how many keys are, at
// most, across all rooms; 0 leaves the default.
func (x *KeyIndex) SetWindow(window time.Duration, max int) {
	if window <= 0 {
		window = DefaultKeyWindow
	}
	if max <= 0 {
		max = DefaultMaxKeys
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.window, x.max = window, max
	for len(x.byKey) > x.max && x.pop() {
	}
}

// Window returns how long a key is remembered.
func (x *KeyIndex) Window() time.Duration {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.window
}

// seed makes the hashes of this package random per process, so that no
// client can aim for a collision.
var seed = maphash.MakeSeed()

// keyOf names k in room.
func keyOf(room string, k Key) roomKey {
	return roomKey{room: room, scope: maphash.String(seed, k.Scope), key: k.Name}
}

// sumOf hashes what a repeat must carry unchanged. The user's length goes
// first, so that no split of the same bytes into user and text collides.
func sumOf(m Message) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var head [binary.MaxVarintLen64 + 1]byte
	n := binary.PutUvarint(head[:], uint64(len(m.User)))
	if m.Verified {
		head[n] = 1
	}
	h.Write(head[:n+1])
	h.WriteString(m.User)
	h.WriteString(m.Message)
	return h.Sum64()
}

// Recall returns what k was first used for in the room within the window;
// Seq is 0 when the index does not know it. m is the retry, for
// Recalled.Same.
func (x *KeyIndex) Recall(room string, k Key, m Message) Recalled {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.byKey[keyOf(room, k)]
	if !ok || expired(e.at, time.Now(), x.window) {
		return Recalled{}
	}
	return Recalled{Epoch: e.epoch, Seq: e.seq, Time: time.UnixMilli(e.at).UTC(), Same: e.sum == sumOf(m)}
}

// Put remembers that k was first used for m, stored under seq in the
// room's epoch, forgetting the oldest keys when more than the budget would
// be kept; a new key of an author who has maxKeysPerScope is not
// remembered.
func (x *KeyIndex) Put(room, epoch string, k Key, seq uint64, m Message) {
	rk, e := keyOf(room, k), keyEntry{epoch: epoch, seq: seq, at: m.Time.UnixMilli(), sum: sumOf(m)}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byKey[rk]; !ok {
		if x.perScope[rk.scope] >= maxKeysPerScope {
			return
		}
		for len(x.byKey) >= x.max && x.pop() {
		}
		x.perScope[rk.scope]++
	}
	x.byKey[rk] = e
	x.order = append(x.order, keyRef{rk, e.at})
	if !x.sweeping {
		x.sweeping = true
		time.AfterFunc(x.window, x.sweep)
	}
}

// sweep forgets every key older than the window, and comes back for the
// rest when they expire: an index that no one posts to empties too.
func (x *KeyIndex) sweep() {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := time.Now()
	for x.head < len(x.order) && expired(x.order[x.head].at, now, x.window) {
		x.pop()
	}
	if x.head == len(x.order) {
		x.sweeping = false
		return
	}
	next := time.UnixMilli(x.order[x.head].at).Add(x.window)
	time.AfterFunc(max(time.Until(next), time.Millisecond), x.sweep)
}

// pop forgets the oldest key, reporting false when there is none. x.mu must
// be held.
func (x *KeyIndex) pop() bool {
	if x.head == len(x.order) {
		return false
	}
	ref := x.order[x.head]
	x.order[x.head] = keyRef{}
	x.head++
	if e, ok := x.byKey[ref.k]; ok && e.at == ref.at {
		delete(x.byKey, ref.k)
		if x.perScope[ref.k.scope]--; x.perScope[ref.k.scope] == 0 {
			delete(x.perScope, ref.k.scope)
		}
	}
	// Reclaim the consumed front once it is half the slice.
	if x.head > len(x.order)/2 {
		x.order = append(x.order[:0:0], x.order[x.head:]...)
		x.head = 0
	}
	return true
}

// Len returns how many keys are remembered.
func (x *KeyIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byKey)
}

func expired(at int64, now time.Time, window time.Duration) bool {
	return now.UnixMilli()-at >= window.Milliseconds()
}
