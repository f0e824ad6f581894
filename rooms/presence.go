package rooms

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"
)

// Presence events are coalesced: a room announces joins and leaves at most
// once per PresenceInterval, and a change after a quiet spell waits
// presenceGather for the changes that come with it (a page that opens
// several streams, a crowd that reconnects after a reload).
const (
	PresenceInterval = time.Second
	presenceGather   = 100 * time.Millisecond
)

// maxPendingPresence bounds the presence events a subscription holds
// unread. Past it the oldest are dropped: presence is a hint, not a
// delivery guarantee, and a reader that far behind is about to be evicted.
const maxPendingPresence = 16

// UserPresence is one named user in a room and how many streams it has
// open there.
type UserPresence struct {
	User    string `json:"user"`
	Streams int    `json:"streams"`
}

// Presence is who is in a room: its named users, sorted, and how many
// streams named nobody.
type Presence struct {
	Users     []UserPresence `json:"users"`
	Anonymous int            `json:"anonymous"`
}

// PresenceChange is the data of a presence event: the users who came and
// went since the last one.
type PresenceChange struct {
	Joined []string `json:"joined"`
	Left   []string `json:"left"`
}

// presence is a room's: guarded by the room's lock.
type presence struct {
	streams   map[string]int // by named user
	anonymous int
	watchers  map[*Subscription]struct{}
	announced map[string]bool     // the users as the last event left them
	changed   map[string]struct{} // users who came or went since, to check
	scheduled bool
	lastEvent time.Time
	version   uint64 // changes with the room's streams; see Headcount.Version
}

// join counts a stream of user ("" for anonymous), and queues the room's
// current users for a subscription that watches presence. r.mu is held.
func (r *room) join(s *Subscription, user string, watch bool) {
	p := &r.presence
	p.version = headcountVersions.Add(1)
	if user == "" {
		p.anonymous++
	} else {
		p.init()
		p.streams[user]++
		if p.streams[user] == 1 {
			r.presenceChanged(user)
		}
	}
	if watch {
		if p.watchers == nil {
			p.watchers = map[*Subscription]struct{}{}
		}
		p.watchers[s] = struct{}{}
		// The watcher starts from the users announced so far; the events
		// that follow change that.
		joined := make([]string, 0, len(p.announced))
		for u := range p.announced {
			joined = append(joined, u)
		}
		slices.Sort(joined)
		s.queuePresence(&Event{Kind: EventPresence, Presence: PresenceChange{Joined: joined, Left: []string{}}})
	}
}

// leave undoes join. r.mu is held.
func (r *room) leave(s *Subscription, user string) {
	p := &r.presence
	p.version = headcountVersions.Add(1)
	delete(p.watchers, s)
	if user == "" {
		p.anonymous--
		return
	}
	if p.streams[user]--; p.streams[user] == 0 {
		delete(p.streams, user)
		r.presenceChanged(user)
	}
}

// init makes the maps of named users, on the first one.
func (p *presence) init() {
	if p.streams == nil {
		p.streams, p.announced, p.changed = map[string]int{}, map[string]bool{}, map[string]struct{}{}
	}
}

// presenceChanged notes that user came or went, here or in another
// process, and schedules the next presence event, unless one is scheduled.
// r.mu is held.
func (r *room) presenceChanged(user string) {
	p := &r.presence
	p.init()
	p.changed[user] = struct{}{}
	if p.scheduled {
		return
	}
	p.scheduled = true
	wait := max(presenceGather, time.Until(p.lastEvent.Add(PresenceInterval)))
	time.AfterFunc(wait, r.announce)
}

// announce sends the users who joined and left since the last event to the
// room's presence watchers.
func (r *room) announce() {
	r.mu.Lock()
	p := &r.presence
	p.scheduled = false
	if r.closed {
		r.mu.Unlock()
		return
	}
	// Only who came or went since the last event is checked: the cost of
	// an event does not grow with the room.
	var change PresenceChange
	for u := range p.changed {
		switch here := p.streams[u] > 0 || r.others.Users[u] > 0; {
		case here && !p.announced[u]:
			change.Joined = append(change.Joined, u)
			p.announced[u] = true
		case !here && p.announced[u]:
			change.Left = append(change.Left, u)
			delete(p.announced, u)
		}
	}
	clear(p.changed)
	if len(change.Joined)+len(change.Left) == 0 {
		r.mu.Unlock()
		return // who came also went
	}
	p.lastEvent = time.Now()
	slices.Sort(change.Joined)
	slices.Sort(change.Left)
	if change.Joined == nil {
		change.Joined = []string{}
	}
	if change.Left == nil {
		change.Left = []string{}
	}
	ev := &Event{Kind: EventPresence, Presence: change}
	for s := range p.watchers {
		s.queuePresence(ev)
	}
	if h := r.config().Hooks.Presence; h != nil {
		h(r.name, change)
	}
	r.mu.Unlock()
}

// queuePresence holds ev for the subscription's next Take and wakes its
// reader.
func (s *Subscription) queuePresence(ev *Event) {
	s.pmu.Lock()
	if len(s.presence) == maxPendingPresence {
		s.presence = slices.Delete(s.presence, 0, 1)
	}
	s.presence = append(s.presence, ev)
	s.pmu.Unlock()
	s.wake()
}

// takePresence appends the presence events held for the subscription to
// dst.
func (s *Subscription) takePresence(dst []*Event) []*Event {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	dst = append(dst, s.presence...)
	clear(s.presence) // an idle watcher keeps no event it sent
	s.presence = s.presence[:0]
	return dst
}

func marshalPresenceChange(change PresenceChange) []byte {
	data, _ := json.Marshal(change) // strings only: it cannot fail
	return data
}

// Presence returns who is in the named room: with a Census store, in
// every process. A room that does not exist has nobody in it.
func (m *Manager) Presence(roomName string) (Presence, error) {
	var here, others Headcount
	err := m.withRoom(roomName, false, func(r *room) error {
		here = Headcount{Anonymous: r.presence.anonymous, Users: maps.Clone(r.presence.streams)}
		others = r.others
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		err, others = nil, m.othersOf(roomName)
	}
	out := Presence{Users: []UserPresence{}, Anonymous: here.Anonymous + others.Anonymous}
	for u, n := range here.Users {
		out.Users = append(out.Users, UserPresence{User: u, Streams: n + others.Users[u]})
	}
	for u, n := range others.Users {
		if here.Users[u] == 0 {
			out.Users = append(out.Users, UserPresence{User: u, Streams: n})
		}
	}
	slices.SortFunc(out.Users, func(a, b UserPresence) int { return strings.Compare(a.User, b.User) })
	return out, err
}
