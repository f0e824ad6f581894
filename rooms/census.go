package rooms

import (
	"context"
	"maps"
	"sync/atomic"
	"time"
)

// CensusInterval is how often a Manager on a Census store reports who
// follows its rooms and learns who follows them in the other processes.
const CensusInterval = 250 * time.Millisecond

// Headcount is who follows a room in one process, or in several summed.
type Headcount struct {
	Subscribers int
	Anonymous   int
	Users       map[string]int // streams by named user
	// LastID is the id of the room's newest message here, "" for none;
	// it is not summed.
	LastID string
	// Version changes whenever the room's streams here do, and is never
	// the same for two rooms: a store compares it rather than the counts.
	// It is not summed.
	Version uint64
}

// headcountVersions numbers the changes of every room's streams.
var headcountVersions atomic.Uint64

// directoryEvery is how many census ticks pass between two readings of a
// Census store's Directory while rooms are listed: a listing reads the last one, so a
// store that hangs never holds up a request, and a room another process
// made is listed here within about a second. A reading costs the store
// about one command per room it holds, so when no one has listed the rooms
// for directoryListed, it is read ten times less often.
const (
	directoryEvery  = 4
	directoryListed = time.Minute
)

// Census is implemented by a Store that several processes share: each
// reports who follows its rooms and learns who follows them elsewhere, so
// that listings and presence cover every process. It is the one optional
// interface of a Store: a store that no other process shares has no one
// to count, and the Manager's locking and data flow are the same with or
// without it.
type Census interface {
	// Exchange reports here, this process's open rooms and who follows
	// them, in place of its last report, and returns what the other live
	// processes last reported, summed per room. A process that stops
	// reporting drops out after a time the store documents. The Manager
	// calls it every CensusInterval, from one goroutine, with a new map
	// each time, which the store may keep.
	Exchange(ctx context.Context, here map[string]Headcount) (others map[string]Headcount, err error)
	// Leave withdraws this process's report at once: the Manager is
	// closing. It is called after the last Exchange.
	Leave(ctx context.Context) error
	// Directory returns the rooms the store holds, with the id of each
	// one's newest message, so that every process lists the same rooms,
	// those no process has open included.
	Directory(ctx context.Context) (map[string]string, error)
}

// census exchanges headcounts with the other processes until Close. A
// failed exchange keeps what the last one learnt: the next one, a tick
// later, may succeed.
func (m *Manager) census(c Census) {
	defer close(m.censusDone)
	tick := time.NewTicker(CensusInterval)
	defer tick.Stop()
	for ticks := 0; ; ticks++ {
		select {
		case <-m.stopJanitor:
			ctx, cancel := context.WithTimeout(context.Background(), 4*CensusInterval)
			_ = c.Leave(ctx)
			cancel()
			return
		case <-tick.C:
		}
		listed := time.Since(time.Unix(0, m.listed.Load())) < directoryListed
		if ticks%directoryEvery == 0 && (listed || ticks%(10*directoryEvery) == 0) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*CensusInterval)
			if held, err := c.Directory(ctx); err == nil {
				m.directory.Store(&held)
			}
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*CensusInterval)
		others, err := c.Exchange(ctx, m.headcounts())
		cancel()
		if err != nil {
			continue
		}
		m.others.Store(&others)
		for _, r := range m.snapshot() {
			r.mu.Lock()
			if !r.closed {
				r.setOthers(others[r.name])
			}
			r.mu.Unlock()
		}
	}
}

// headcounts returns who follows each open room here. A room whose streams
// and messages did not change since the last tick gives its last
// headcount again, copying nothing.
func (m *Manager) headcounts() map[string]Headcount {
	rs := m.snapshot()
	out := make(map[string]Headcount, len(rs))
	for _, r := range rs {
		r.mu.Lock()
		if !r.closed {
			h := &r.reported
			if h.Version != r.presence.version || h.Version == 0 {
				*h = Headcount{Subscribers: r.subscribers, Anonymous: r.presence.anonymous, Users: maps.Clone(r.presence.streams), LastID: h.LastID, Version: r.presence.version}
			}
			if r.reportedLast != r.history.Last() || r.reportedEpoch != r.history.Epoch() {
				r.reportedLast, r.reportedEpoch, h.LastID = r.history.Last(), r.history.Epoch(), r.lastID()
			}
			out[r.name] = *h
		}
		r.mu.Unlock()
	}
	return out
}

// othersOf returns who follows the named room in the other processes, as
// the last exchange learnt.
func (m *Manager) othersOf(room string) Headcount {
	if others := m.others.Load(); others != nil {
		return (*others)[room]
	}
	return Headcount{}
}

// setOthers takes who follows the room in the other processes, and notes
// the users who came or went there for the next presence event. r.mu is
// held.
func (r *room) setOthers(h Headcount) {
	old := r.others
	r.others = h
	for u, n := range h.Users {
		if n > 0 && old.Users[u] == 0 {
			r.presenceChanged(u)
		}
	}
	for u := range old.Users {
		if h.Users[u] == 0 {
			r.presenceChanged(u)
		}
	}
}

// listElsewhere adds to out, which lists the rooms open here, the rooms
// that only other processes follow, or that a Census store holds, with
// their followers and newest ids, as the census last learnt them: the
// listing says what this process knows, and asks the store nothing.
func (m *Manager) listElsewhere(out []RoomInfo) []RoomInfo {
	listed := make(map[string]int, len(out))
	for i, info := range out {
		listed[info.Name] = i
	}
	if others := m.others.Load(); others != nil {
		for name, h := range *others {
			if _, ok := listed[name]; !ok {
				listed[name] = len(out)
				out = append(out, RoomInfo{Name: name, Subscribers: h.Subscribers, Users: len(h.Users)})
			}
		}
	}
	m.listed.Store(time.Now().UnixNano())
	held := m.directory.Load()
	if held == nil {
		return out
	}
	for name, last := range *held {
		i, ok := listed[name]
		switch {
		case !ok:
			out = append(out, RoomInfo{Name: name, LastID: last})
		case out[i].LastID == "":
			out[i].LastID = last
		}
	}
	return out
}
