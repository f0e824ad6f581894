package rooms

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// AllRooms is the room of a ban that holds in every room.
const AllRooms = "*"

// DefaultMaxBans is how many bans in force one room, or AllRooms, may hold
// by default (Config.MaxBans): a ban costs a few hundred bytes in every
// process, so the bound keeps a flood of bans from exhausting memory.
// Expired bans do not count.
const DefaultMaxBans = 10000

// Errors of bans.
var (
	// ErrTooManyBans refuses a ban in a room that holds Config.MaxBans
	// bans in force.
	ErrTooManyBans = errors.New("the room holds the most bans allowed; lift some first")
	// ErrBanNotFound answers for a ban that the room does not hold, or
	// no longer: it was lifted or it expired.
	ErrBanNotFound = errors.New("no such ban")
)

// Ban refuses a subject's posts in a room, or in every room, until it
// expires. Its JSON form is how the stores keep it. Subject is a client
// key, possibly an address: it is kept server-side and never published.
type Ban struct {
	ID   string `json:"id"`
	Room string `json:"room"` // a room, or AllRooms
	// Subject is who is banned: a verified identity or an anonymous
	// client's key, as the caller of the Manager names them.
	Subject string    `json:"subject"`
	Reason  string    `json:"reason,omitempty"`
	By      string    `json:"by,omitempty"` // the moderator
	Created time.Time `json:"created"`
	// Expires is when the ban ends; zero for never.
	Expires time.Time `json:"expires,omitzero"`
}

// InForce reports whether b holds at now.
func (b Ban) InForce(now time.Time) bool { return b.Expires.IsZero() || now.Before(b.Expires) }

// newBanID returns a random id, short and URL-safe: 72 bits make two
// bans put at once on two nodes never share one.
func newBanID() string {
	var b [9]byte
	_, _ = rand.Read(b[:]) // never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// BanList is the bans a process holds in memory, so that a post asks the
// store nothing to learn whether its author is banned. Every Store keeps
// one: a local engine as the only copy besides its file, a store that
// nodes share as a copy that it keeps current. Its methods are safe for
// concurrent use; the zero value is empty.
type BanList struct {
	// held counts the bans held, so that a post in a process with none
	// takes no lock.
	held atomic.Int64

	mu        sync.RWMutex
	byID      map[string]Ban
	byRoom    map[string]map[string]struct{} // room → ids
	bySubject map[banKey][]string            // room and subject → ids
	// next is the earliest expiry among the bans held, zero for none:
	// Expired looks no further before then.
	next time.Time
}

// banKey is a subject in a room.
type banKey struct{ room, subject string }

// Banned returns the ban in force that holds subject out of room,
// directly or through AllRooms, and reports whether there is one; of
// several, the one that ends last. It runs on every post: with no ban
// held, it costs one atomic load, not even a look at the clock.
func (l *BanList) Banned(room, subject string) (Ban, bool) {
	if l.held.Load() == 0 {
		return Ban{}, false
	}
	now := time.Now()
	l.mu.RLock()
	defer l.mu.RUnlock()
	var found Ban
	ok := false
	for _, r := range [2]string{room, AllRooms} {
		for _, id := range l.bySubject[banKey{r, subject}] {
			b := l.byID[id]
			if b.InForce(now) && (!ok || endsLater(b, found)) {
				found, ok = b, true
			}
		}
	}
	return found, ok
}

// endsLater reports whether a ends after b.
func endsLater(a, b Ban) bool {
	return a.Expires.IsZero() && !b.Expires.IsZero() || !b.Expires.IsZero() && a.Expires.After(b.Expires)
}

// List returns the bans of room (AllRooms lists those of every room, not
// all bans) in force at now, oldest first.
func (l *BanList) List(room string, now time.Time) []Ban {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []Ban
	for id := range l.byRoom[room] {
		if b := l.byID[id]; b.InForce(now) {
			out = append(out, b)
		}
	}
	SortBans(out)
	return out
}

// Get returns the ban of room with id, in force at now.
func (l *BanList) Get(room, id string, now time.Time) (Ban, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	b, ok := l.byID[id]
	return b, ok && b.Room == room && b.InForce(now)
}

// Full reports whether room holds limit bans in force at now.
func (l *BanList) Full(room string, limit int, now time.Time) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.byRoom[room]) < limit {
		return false
	}
	n := 0
	for id := range l.byRoom[room] {
		if l.byID[id].InForce(now) {
			n++
		}
	}
	return n >= limit
}

// Expired returns the ids of the bans held that expired by now.
func (l *BanList) Expired(now time.Time) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.next.IsZero() || now.Before(l.next) {
		return nil
	}
	var ids []string
	for id, b := range l.byID {
		if !b.InForce(now) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Put holds b, in place of a ban of its id held before.
func (l *BanList) Put(b Ban) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.put(b)
}

// put is Put with l.mu held.
func (l *BanList) put(b Ban) {
	if l.byID == nil {
		l.byID, l.byRoom, l.bySubject = map[string]Ban{}, map[string]map[string]struct{}{}, map[banKey][]string{}
	}
	l.remove(b.ID)
	l.byID[b.ID] = b
	ids := l.byRoom[b.Room]
	if ids == nil {
		ids = map[string]struct{}{}
		l.byRoom[b.Room] = ids
	}
	ids[b.ID] = struct{}{}
	k := banKey{b.Room, b.Subject}
	l.bySubject[k] = append(l.bySubject[k], b.ID)
	if !b.Expires.IsZero() && (l.next.IsZero() || b.Expires.Before(l.next)) {
		l.next = b.Expires
	}
	l.held.Add(1)
}

// Remove forgets the bans of ids, and returns those it held.
func (l *BanList) Remove(ids ...string) []Ban {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Ban
	for _, id := range ids {
		if b, ok := l.remove(id); ok {
			out = append(out, b)
		}
	}
	if len(out) > 0 {
		l.findNext()
	}
	return out
}

// remove forgets the ban of id, with l.mu held.
func (l *BanList) remove(id string) (Ban, bool) {
	b, ok := l.byID[id]
	if !ok {
		return Ban{}, false
	}
	delete(l.byID, id)
	delete(l.byRoom[b.Room], id)
	if len(l.byRoom[b.Room]) == 0 {
		delete(l.byRoom, b.Room)
	}
	k := banKey{b.Room, b.Subject}
	if ids := slices.DeleteFunc(l.bySubject[k], func(other string) bool { return other == id }); len(ids) > 0 {
		l.bySubject[k] = ids
	} else {
		delete(l.bySubject, k)
	}
	l.held.Add(-1)
	return b, true
}

// findNext finds the earliest expiry again, with l.mu held.
func (l *BanList) findNext() {
	l.next = time.Time{}
	for _, b := range l.byID {
		if !b.Expires.IsZero() && (l.next.IsZero() || b.Expires.Before(l.next)) {
			l.next = b.Expires
		}
	}
}

// Replace holds bans and nothing else: what a store shared by other
// processes holds, read again.
func (l *BanList) Replace(bans []Ban) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// held stays above zero until the new bans are in: a post that
	// looked at it meanwhile would take no lock and pass as unbanned.
	was := l.held.Load()
	l.held.Add(1)
	l.byID, l.byRoom, l.bySubject, l.next = nil, nil, nil, time.Time{}
	for _, b := range bans {
		l.put(b)
	}
	l.held.Add(-was - 1)
}

// PutBan puts b in force: in b.Room, a valid room name or AllRooms, on
// b.Subject, until b.Expires (zero for never). It names the ban with an
// id of its own and returns it as the store keeps it. It refuses, with
// ErrTooManyBans, a ban in a room that holds Config.MaxBans.
func (m *Manager) PutBan(b Ban) (Ban, error) {
	if b.Room != AllRooms && !ValidName(b.Room) {
		return Ban{}, ErrInvalidName
	}
	if b.Subject == "" {
		return Ban{}, errors.New("a ban needs a subject")
	}
	b.ID = newBanID()
	if b.Created.IsZero() {
		b.Created = time.Now()
	}
	b.Created, b.Expires = b.Created.UTC().Truncate(time.Millisecond), b.Expires.UTC().Truncate(time.Millisecond)
	ctx, cancel := m.storeContext()
	defer cancel()
	cfg := m.config()
	put, err := cfg.Store.PutBan(ctx, b, cfg.MaxBans)
	if err != nil && !errors.Is(err, ErrTooManyBans) {
		return Ban{}, fmt.Errorf("putting a ban in room %q: %w: %w", b.Room, ErrUnavailable, err)
	}
	if h := m.config().Hooks.Banned; err == nil && h != nil {
		h(put)
	}
	return put, err
}

// Bans returns the bans in force in room, oldest first: those put on the
// room itself, or with AllRooms, those put on every room.
func (m *Manager) Bans(room string) ([]Ban, error) {
	if room != AllRooms && !ValidName(room) {
		return nil, ErrInvalidName
	}
	ctx, cancel := m.storeContext()
	defer cancel()
	bans, err := m.config().Store.Bans(ctx, room)
	if err != nil {
		return nil, fmt.Errorf("listing the bans of room %q: %w: %w", room, ErrUnavailable, err)
	}
	return bans, nil
}

// LiftBan lifts the ban of room with id, or answers ErrBanNotFound when
// room holds none in force.
func (m *Manager) LiftBan(room, id string) error {
	if room != AllRooms && !ValidName(room) {
		return ErrInvalidName
	}
	ctx, cancel := m.storeContext()
	defer cancel()
	err := m.config().Store.LiftBan(ctx, room, id)
	if err != nil && !errors.Is(err, ErrBanNotFound) {
		return fmt.Errorf("lifting ban %q of room %q: %w: %w", id, room, ErrUnavailable, err)
	}
	return err
}

// Banned returns the ban in force that holds subject out of room, and
// reports whether there is one, from what this process holds: a post
// waits for no store to learn it.
func (m *Manager) Banned(room, subject string) (Ban, bool) {
	return m.config().Store.Banned(room, subject)
}

// SortBans sorts bans oldest first, as Store.Bans returns them.
func SortBans(bans []Ban) {
	slices.SortFunc(bans, func(a, b Ban) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
}
