package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m := New(cfg)
	t.Cleanup(func() { m.Close() })
	return m
}

func post(t *testing.T, m *Manager, room string, texts ...string) []Message {
	t.Helper()
	var out []Message
	for _, text := range texts {
		msg, _, err := m.Submit(room, Post{User: "alice", Text: text})
		if err != nil {
			t.Fatalf("Submit(%q, %q): %v", room, text, err)
		}
		out = append(out, msg)
	}
	return out
}

func texts(msgs []Message) string {
	var b []string
	for _, m := range msgs {
		b = append(b, m.Message)
	}
	return strings.Join(b, ",")
}

func TestValidName(t *testing.T) {
	tests := map[string]bool{
		"lobby": true, "A.b_c-9": true, "9": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, ".hidden": false, "-x": false, "_x": false,
		"..": false, "a/b": false, "a%2Fb": false, "a b": false, "é": false, "a\x00": false,
	}
	for name, want := range tests {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		id    string
		epoch string
		seq   uint64
		ok    bool
	}{
		{"abc-1", "abc", 1, true},
		{"a-b-42", "a-b", 42, true},
		{"abc-0", "", 0, false},
		{"abc-01", "", 0, false},
		{"abc-", "", 0, false},
		{"-1", "", 0, false},
		{"abc", "", 0, false},
		{"abc-1x", "", 0, false},
		{"abc-+1", "", 0, false},
		{"abc-99999999999999999999999", "", 0, false},
		{"", "", 0, false},
	}
	for _, tt := range tests {
		epoch, seq, ok := ParseID(tt.id)
		if epoch != tt.epoch || seq != tt.seq || ok != tt.ok {
			t.Errorf("ParseID(%q) = %q, %d, %v; want %q, %d, %v", tt.id, epoch, seq, ok, tt.epoch, tt.seq, tt.ok)
		}
		if tt.ok && FormatID(epoch, seq) != tt.id {
			t.Errorf("FormatID does not invert ParseID for %q", tt.id)
		}
	}
}

func TestRing(t *testing.T) {
	ctx := context.Background()
	h, _ := NewMemoryStore().Open(ctx, "r", 3)
	for i := 1; i <= 5; i++ {
		Append(ctx, h, []Entry{{Message: Message{Message: fmt.Sprint(i)}}})
	}
	tests := []struct {
		after uint64
		limit int
		want  string
	}{
		{0, 10, "3,4,5"},
		{2, 10, "3,4,5"},
		{3, 10, "4,5"},
		{4, 1, "5"},
		{5, 10, ""},
		{9, 10, ""},
		{0, 2, "3,4"},
		{0, 0, ""},
	}
	for _, tt := range tests {
		got, _ := h.Read(ctx, tt.after, h.Last(), tt.limit)
		if texts(got) != tt.want {
			t.Errorf("Read(%d, last, %d) = %q, want %q", tt.after, tt.limit, texts(got), tt.want)
		}
	}
	if h.Oldest() != 3 || h.Last() != 5 {
		t.Errorf("Oldest, Last = %d, %d; want 3, 5", h.Oldest(), h.Last())
	}
	h.Resize(ctx, 2)
	if got, _ := h.Read(ctx, 0, h.Last(), 10); texts(got) != "4,5" || h.Oldest() != 4 {
		t.Errorf("after shrinking to 2: %q, oldest %d", texts(got), h.Oldest())
	}
	h.Resize(ctx, 4)
	Append(ctx, h, []Entry{{Message: Message{Message: "6"}}})
	Append(ctx, h, []Entry{{Message: Message{Message: "7"}}})
	Append(ctx, h, []Entry{{Message: Message{Message: "8"}}})
	if got, _ := h.Read(ctx, 0, h.Last(), 10); texts(got) != "5,6,7,8" {
		t.Errorf("after growing to 4 and three appends: %q", texts(got))
	}
	none, _ := NewMemoryStore().Open(ctx, "r", 0)
	Append(ctx, none, []Entry{{Message: Message{}}})
	if got, _ := none.Read(ctx, 0, none.Last(), 10); len(got) != 0 || none.Oldest() != 2 || none.Last() != 1 {
		t.Errorf("zero capacity kept %d, oldest %d, last %d", len(got), none.Oldest(), none.Last())
	}
}

func TestIDsIncrease(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	msgs := post(t, m, "lobby", "a", "b", "c")
	other := post(t, m, "other", "x")
	epoch, _, _ := ParseID(msgs[0].ID)
	for i, msg := range msgs {
		e, seq, ok := ParseID(msg.ID)
		if !ok || e != epoch || seq != uint64(i+1) {
			t.Errorf("message %d has id %q, want %s-%d", i, msg.ID, epoch, i+1)
		}
		if msg.Room != "lobby" || msg.User != "alice" || msg.Time.IsZero() {
			t.Errorf("message %d = %+v", i, msg)
		}
	}
	if e, _, _ := ParseID(other[0].ID); e == epoch {
		t.Errorf("two rooms share epoch %q", e)
	}
}

func TestReplay(t *testing.T) {
	m := newManager(t, Config{History: 3, Buffer: 10})
	msgs := post(t, m, "lobby", "1", "2", "3", "4", "5")
	epoch, _, _ := ParseID(msgs[0].ID)
	tests := []struct {
		name       string
		pos        Position
		want       string
		wantReset  bool
		wantOldest string
	}{
		{"fresh", Position{}, "", false, ""},
		{"history 2", Position{History: 2}, "4,5", false, ""},
		{"history beyond retained", Position{History: 50}, "3,4,5", false, ""},
		{"resume within history", Position{LastEventID: msgs[3].ID}, "5", false, ""},
		{"resume at the edge of history", Position{LastEventID: msgs[1].ID}, "3,4,5", false, ""},
		{"resume at the newest", Position{LastEventID: msgs[4].ID}, "", false, ""},
		{"resume id wins over history", Position{LastEventID: msgs[3].ID, History: 3}, "5", false, ""},
		{"too old", Position{LastEventID: msgs[0].ID}, "3,4,5", true, msgs[2].ID},
		{"foreign epoch", Position{LastEventID: "zzz-4"}, "3,4,5", true, msgs[2].ID},
		{"from the future", Position{LastEventID: FormatID(epoch, 9)}, "3,4,5", true, msgs[2].ID},
		{"malformed", Position{LastEventID: "garbage"}, "3,4,5", true, msgs[2].ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := m.Subscribe("lobby", tt.pos, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if texts(s.Messages) != tt.want || s.Reset != tt.wantReset || s.Oldest != tt.wantOldest {
				t.Errorf("replay = %q reset=%v oldest=%q; want %q reset=%v oldest=%q",
					texts(s.Messages), s.Reset, s.Oldest, tt.want, tt.wantReset, tt.wantOldest)
			}
		})
	}
}

// TestReplayThenLiveHasNoGap subscribes while messages flow: each
// subscriber's replay followed by its live frames must be exactly messages
// 1..n, whatever moment it joined at.
func TestReplayThenLiveHasNoGap(t *testing.T) {
	const n = 500
	m := newManager(t, Config{History: n, Buffer: n})
	subs := make(chan *Subscription, 20)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(subs)
		for i := range n {
			post(t, m, "lobby", fmt.Sprint(i))
			if i%25 == 0 {
				s, err := m.Subscribe("lobby", Position{History: n}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				subs <- s
			}
		}
	})
	wg.Wait()
	for s := range subs {
		var seqs []uint64
		for _, msg := range s.Messages {
			_, seq, _ := ParseID(msg.ID)
			seqs = append(seqs, seq)
		}
		events, _ := s.Take(nil)
		for _, e := range events {
			_, seq, _ := ParseID(e.Message.ID)
			seqs = append(seqs, seq)
		}
		s.Close()
		if len(seqs) != n {
			t.Errorf("subscriber saw %d messages, want %d", len(seqs), n)
		}
		for i, seq := range seqs {
			if seq != uint64(i+1) {
				t.Errorf("message %d has seq %d: gap or duplicate", i, seq)
				break
			}
		}
	}
}

// TestIdempotency: a key belongs to its author's scope. Within it, a repeat
// of the same post gets the first message back, and anything else posted
// under the key is refused; another scope's key of the same name is
// another key.
func TestIdempotency(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	alice := Post{User: "alice", Text: "hi", Key: "key-1", Scope: "ip:192.0.2.1 alice"}
	otherAlice := alice
	otherAlice.Scope = "ip:192.0.2.2 alice"
	verifiedBob := Post{User: "bob", Text: "hi", Key: "key-1", Scope: "id:bob", Verified: true}
	edited, renamed, verified := alice, alice, alice
	edited.Text, renamed.User, verified.Verified = "hi, edited", "bob", true
	steps := []struct {
		name    string
		post    Post
		want    int // the message number the post answers with, from 1
		repeat  bool
		wantErr error
	}{
		{"first", alice, 1, false, nil},
		{"repeat", alice, 1, true, nil},
		{"other text", edited, 0, false, ErrKeyReused},
		{"other user", renamed, 0, false, ErrKeyReused},
		{"now verified", verified, 0, false, ErrKeyReused},
		{"same key, same text, another address", otherAlice, 2, false, nil},
		{"same key, a verified author", verifiedBob, 3, false, nil},
		{"repeat of the second author", otherAlice, 2, true, nil},
		{"repeat of the verified author", verifiedBob, 3, true, nil},
	}
	var stored []Message
	for _, step := range steps {
		msg, repeat, err := m.Submit("lobby", step.post)
		switch {
		case !errors.Is(err, step.wantErr):
			t.Fatalf("%s: err %v, want %v", step.name, err, step.wantErr)
		case err != nil:
			continue
		case !repeat:
			stored = append(stored, msg)
		}
		if repeat != step.repeat || step.want > len(stored) || msg != stored[step.want-1] {
			t.Errorf("%s: %+v repeat=%v; want message %d, repeat=%v", step.name, msg, repeat, step.want, step.repeat)
		}
	}
	rep, _ := m.Messages("lobby", "", "", 10)
	if len(rep.Messages) != 3 || rep.Messages[2] != stored[2] || !rep.Messages[2].Verified || rep.Messages[0].Verified {
		t.Errorf("history %+v, want the three messages stored, the last verified", rep.Messages)
	}
	other, repeat, _ := m.Submit("other", alice)
	if repeat || other.Room != "other" {
		t.Error("an idempotency key was shared between rooms")
	}
	// A deleted room's keys name messages that are gone: the key is free.
	if err := m.Delete("lobby"); err != nil {
		t.Fatal(err)
	}
	if msg, repeat, err := m.Submit("lobby", alice); err != nil || repeat || msg.ID == stored[0].ID {
		t.Errorf("key after the room was deleted: %+v repeat=%v err=%v; want a new message", msg, repeat, err)
	}
}

// TestRepeat: Repeat answers a keyed post as Submit would, stored message
// or ErrKeyReused, and stores nothing, asks no Admit and makes no room.
func TestRepeat(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	alice := Post{User: "alice", Text: "hi", Key: "k", Scope: "ip:192.0.2.1 alice",
		Admit: func() error { t.Error("Repeat asked Admit"); return nil }}
	edited, unkeyed := alice, alice
	edited.Text, unkeyed.Key = "edited", ""
	if _, found, err := m.Repeat("lobby", alice); found || err != nil || m.Len() != 0 {
		t.Fatalf("before any post: found=%v err=%v, %d rooms; want nothing found, no room", found, err, m.Len())
	}
	first := post(t, m, "lobby", "hi")[0]
	stored, _, err := m.Submit("lobby", Post{User: "alice", Text: "hi", Key: "k", Scope: alice.Scope})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		post    Post
		want    Message
		found   bool
		wantErr error
	}{
		{"repeat", alice, stored, true, nil},
		{"other text", edited, Message{}, false, ErrKeyReused},
		{"no key", unkeyed, Message{}, false, nil},
	}
	for _, tt := range tests {
		msg, found, err := m.Repeat("lobby", tt.post)
		if msg != tt.want || found != tt.found || !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: %+v found=%v err=%v; want %+v found=%v err=%v", tt.name, msg, found, err, tt.want, tt.found, tt.wantErr)
		}
	}
	if rep, _ := m.Messages("lobby", first.ID, "", 10); len(rep.Messages) != 1 {
		t.Errorf("%d messages after the first, want 1: Repeat stored one", len(rep.Messages))
	}
}

// TestIdempotencyKeysExpire: a key is forgotten after the window, both when
// the next keyed post looks it up and, without any post, by the index's
// own sweep.
func TestIdempotencyKeysExpire(t *testing.T) {
	const window = 300 * time.Millisecond
	m := newManager(t, Config{History: 10, Buffer: 10, KeyWindow: window})
	first, _, _ := m.Submit("lobby", Post{User: "alice", Text: "hi", Key: "k"})
	if _, repeat, _ := m.Submit("lobby", Post{User: "alice", Text: "hi", Key: "k"}); !repeat || keysOf(m).Len() != 1 {
		t.Fatalf("within the window: repeat=%v keys=%d; want a repeat, 1 key", repeat, keysOf(m).Len())
	}
	time.Sleep(window + 50*time.Millisecond)
	if msg, repeat, _ := m.Submit("lobby", Post{User: "alice", Text: "hi", Key: "k"}); repeat || msg.ID == first.ID {
		t.Errorf("after the window: repeat=%v id=%s; want a new message", repeat, msg.ID)
	}
	// Nothing but the sweep runs here: no post, no lookup.
	quick := newManager(t, Config{KeyWindow: 40 * time.Millisecond})
	quick.Submit("lobby", Post{User: "alice", Text: "hi", Key: "k"})
	deadline := time.Now().Add(5 * time.Second)
	for keysOf(quick).Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := keysOf(quick).Len(); n != 0 {
		t.Errorf("the sweep left %d expired keys", n)
	}
}

// keysOf returns the key index of m's memory store.
func keysOf(m *Manager) *KeyIndex { return m.config().Store.(*LocalStore).keys }

// TestIdempotencyKeyBudget: past MaxKeys, across all rooms, the oldest keys
// are forgotten and the newest still answer.
func TestIdempotencyKeyBudget(t *testing.T) {
	const budget = 100
	m := newManager(t, Config{History: 0, Buffer: 1, MaxKeys: budget})
	for i := range 3 * budget {
		m.Submit(fmt.Sprintf("r%d", i%7), Post{User: "u", Text: "x", Key: fmt.Sprint(i)})
	}
	if n := keysOf(m).Len(); n != budget {
		t.Errorf("%d keys remembered, want the budget, %d", n, budget)
	}
	last := 3*budget - 1
	if _, repeat, _ := m.Submit(fmt.Sprintf("r%d", last%7), Post{User: "u", Text: "x", Key: fmt.Sprint(last)}); !repeat {
		t.Error("the newest key was forgotten")
	}
	if _, repeat, _ := m.Submit("r0", Post{User: "u", Text: "x", Key: "0"}); repeat {
		t.Error("the oldest key is still remembered past the budget")
	}
	if len(keysOf(m).order)-keysOf(m).head > 2*budget {
		t.Errorf("the expiry queue holds %d entries for %d keys", len(keysOf(m).order)-keysOf(m).head, budget)
	}
}

// TestIdempotencyKeysPerAuthor: one author posting fast cannot push another
// author's keys out of the budget; past maxKeysPerScope, only its own new
// keys go unremembered.
func TestIdempotencyKeysPerAuthor(t *testing.T) {
	m := newManager(t, Config{History: 0, Buffer: 1, MaxKeys: 2 * maxKeysPerScope})
	if _, _, err := m.Submit("r", Post{User: "u", Text: "mine", Key: "k", Scope: "quiet"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 * maxKeysPerScope {
		m.Submit("r", Post{User: "u", Text: "x", Key: fmt.Sprint(i), Scope: "greedy"})
	}
	if _, repeat, _ := m.Submit("r", Post{User: "u", Text: "mine", Key: "k", Scope: "quiet"}); !repeat {
		t.Error("another author's posts pushed the quiet author's key out")
	}
	if n := keysOf(m).Len(); n != maxKeysPerScope+1 {
		t.Errorf("%d keys remembered, want the greedy author's %d and the quiet one's", n, maxKeysPerScope)
	}
	if _, repeat, _ := m.Submit("r", Post{User: "u", Text: "x", Key: "0", Scope: "greedy"}); !repeat {
		t.Error("the greedy author's first key was forgotten")
	}
}

func TestLimits(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10, MaxRooms: 2, MaxSubscribers: 2})
	post(t, m, "a", "1")
	post(t, m, "b", "1")
	if _, _, err := m.Submit("c", Post{User: "u", Text: "x"}); !errors.Is(err, ErrTooManyRooms) {
		t.Errorf("third room: %v, want ErrTooManyRooms", err)
	}
	s1, _ := m.Subscribe("a", Position{}, nil)
	s2, _ := m.Subscribe("b", Position{}, nil)
	if _, err := m.Subscribe("a", Position{}, nil); !errors.Is(err, ErrTooManySubscribers) {
		t.Errorf("third subscriber: %v, want ErrTooManySubscribers", err)
	}
	s1.Close()
	s1.Close()
	s3, err := m.Subscribe("a", Position{}, nil)
	if err != nil {
		t.Errorf("subscriber after one left: %v", err)
	}
	s2.Close()
	s3.Close()
	if n := m.Subscribers(); n != 0 {
		t.Errorf("Subscribers() = %d after all closed", n)
	}
	if _, _, err := m.Submit("bad/name", Post{User: "u", Text: "x"}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
	if m.Len() != 2 {
		t.Errorf("rejected calls changed the room count to %d", m.Len())
	}
}

func TestSlowSubscriberEvicted(t *testing.T) {
	var evicted []string
	m := newManager(t, Config{History: 100, Buffer: 2, Hooks: Hooks{Evicted: func(r string) { evicted = append(evicted, r) }}})
	slow, _ := m.Subscribe("lobby", Position{}, nil)
	defer slow.Close()
	fast, _ := m.Subscribe("lobby", Position{}, nil)
	defer fast.Close()
	msgs := post(t, m, "lobby", "1", "2")
	if frames, _ := fast.Take(nil); len(frames) != 2 {
		t.Fatalf("fast subscriber took %d frames, want 2", len(frames))
	}
	post(t, m, "lobby", "3")
	if _, err := slow.Take(nil); !errors.Is(err, ErrEvicted) || len(evicted) != 1 {
		t.Fatalf("slow subscriber: err=%v hooks=%v", err, evicted)
	}
	if frames, err := fast.Take(nil); err != nil || len(frames) != 1 {
		t.Errorf("fast subscriber: err=%v queued=%d", err, len(frames))
	}
	back, _ := m.Subscribe("lobby", Position{LastEventID: msgs[0].ID}, nil)
	defer back.Close()
	if texts(back.Messages) != "2,3" || back.Reset {
		t.Errorf("resume after eviction replays %q reset=%v, want 2,3", texts(back.Messages), back.Reset)
	}
}

func TestDelete(t *testing.T) {
	var dropped []string
	m := newManager(t, Config{History: 10, Buffer: 10, Hooks: Hooks{RoomDropped: func(r, why string) { dropped = append(dropped, r+":"+why) }}})
	old := post(t, m, "lobby", "1", "2")
	s, _ := m.Subscribe("lobby", Position{}, nil)
	post(t, m, "lobby", "3")
	if err := m.Delete("lobby"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	default:
		t.Error("the subscription was not woken")
	}
	if events, err := s.Take(nil); len(events) != 2 || events[0].Kind != EventMessage || events[1] != CloseEvent || !errors.Is(err, ErrRoomClosed) {
		t.Errorf("after delete: %d events, err %v; want the message queued before, the close event and ErrRoomClosed", len(events), err)
	}
	s.Close()
	if err := m.Delete("lobby"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := m.Messages("lobby", "", "", 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("history of a deleted room: %v, want ErrNotFound", err)
	}
	again := post(t, m, "lobby", "new")
	if e1, _, _ := ParseID(old[0].ID); strings.HasPrefix(again[0].ID, e1+"-") {
		t.Errorf("recreated room reuses epoch: %q", again[0].ID)
	}
	s2, _ := m.Subscribe("lobby", Position{LastEventID: old[1].ID}, nil)
	defer s2.Close()
	if !s2.Reset || texts(s2.Messages) != "new" {
		t.Errorf("an id from before the delete: reset=%v replay=%q; want a reset and the new message", s2.Reset, texts(s2.Messages))
	}
	if len(dropped) != 1 || dropped[0] != "lobby:deleted" {
		t.Errorf("RoomDropped calls: %v", dropped)
	}
}

func TestIdleRoomsDropped(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10, IdleTimeout: 50 * time.Millisecond})
	post(t, m, "quiet", "1")
	post(t, m, "watched", "1")
	s, _ := m.Subscribe("watched", Position{}, nil)
	defer s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for m.Len() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rooms := m.Rooms()
	if len(rooms) != 1 || rooms[0].Name != "watched" || rooms[0].Subscribers != 1 {
		t.Errorf("rooms after idle timeout = %+v, want only watched", rooms)
	}
}

func TestConfigure(t *testing.T) {
	m := newManager(t, Config{History: 5, Buffer: 10})
	post(t, m, "lobby", "1", "2", "3", "4", "5")
	m.Configure(Config{History: 2, Buffer: 10})
	rep, err := m.Messages("lobby", "", "", 50)
	if err != nil || texts(rep.Messages) != "4,5" {
		t.Errorf("after shrinking history: %q, %v", texts(rep.Messages), err)
	}
}

func TestClose(t *testing.T) {
	m := New(Config{History: 10, Buffer: 10})
	s, _ := m.Subscribe("lobby", Position{}, nil)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Take(nil); !errors.Is(err, ErrRoomClosed) {
		t.Errorf("subscription after the manager closed: %v", err)
	}
	s.Close()
	if _, _, err := m.Submit("lobby", Post{User: "u", Text: "x"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestConcurrentRooms runs submitters, subscribers, deletes and listings on
// many rooms at once; run it with -race.
func TestConcurrentRooms(t *testing.T) {
	m := newManager(t, Config{History: 50, Buffer: 64, IdleTimeout: 5 * time.Millisecond})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 300 {
				room := fmt.Sprintf("r%d", i%5)
				switch (w + i) % 4 {
				case 0:
					m.Submit(room, Post{User: "u", Text: "x"})
				case 1:
					if s, err := m.Subscribe(room, Position{History: 5}, nil); err == nil {
						s.Take(nil)
						s.Close()
					}
				case 2:
					m.Rooms()
					m.Messages(room, "", "", 10)
				case 3:
					if i%30 == 0 {
						m.Delete(room)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := m.Subscribers(); n != 0 {
		t.Errorf("%d subscribers counted after all closed", n)
	}
}

// FuzzParseID: any string either fails to parse or round-trips exactly.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"abc-1", "a-b-9", "-1", "x-0", "x-01", "x-18446744073709551616", "\x00-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		epoch, seq, ok := ParseID(id)
		if ok && (seq == 0 || FormatID(epoch, seq) != id) {
			t.Fatalf("ParseID(%q) = %q, %d: does not round-trip", id, epoch, seq)
		}
	})
}

// FuzzValidName: an accepted name is 1-64 bytes of the allowed characters and
// survives a URL path segment unchanged.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"lobby", "..", "a/b", "a%2Fb", "é", ".x", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !ValidName(name) {
			return
		}
		if len(name) > 64 || strings.ContainsAny(name, "/%?#\\ \x00") || name[0] == '.' {
			t.Fatalf("ValidName accepted %q", name)
		}
	})
}

// FuzzResume: whatever Last-Event-ID and history count a client sends, the
// replay is a gap-free run of retained messages ending at the newest, and a
// position inside the history is honoured exactly.
func FuzzResume(f *testing.F) {
	m := New(Config{History: 8, Buffer: 4})
	defer m.Close()
	var msgs []Message
	for i := range 12 {
		msg, _, _ := m.Submit("lobby", Post{User: "u", Text: fmt.Sprint(i)})
		msgs = append(msgs, msg)
	}
	epoch, _, _ := ParseID(msgs[0].ID)
	for _, id := range []string{"", msgs[0].ID, msgs[5].ID, msgs[11].ID, epoch + "-13", "x-3", "garbage", epoch + "-"} {
		f.Add(id, 3)
	}
	f.Fuzz(func(t *testing.T, id string, history int) {
		s, err := m.Subscribe("lobby", Position{LastEventID: id, History: history}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var prev uint64
		for i, msg := range s.Messages {
			_, seq, _ := ParseID(msg.ID)
			if i > 0 && seq != prev+1 {
				t.Fatalf("gap in replay for %q: %d after %d", id, seq, prev)
			}
			prev = seq
		}
		if len(s.Messages) > 0 && prev != 12 {
			t.Fatalf("replay for %q ends at %d, not at the newest", id, prev)
		}
		e, seq, ok := ParseID(id)
		inWindow := ok && e == epoch && seq >= 4 && seq <= 12
		if id != "" && inWindow == s.Reset {
			t.Fatalf("id %q: reset=%v", id, s.Reset)
		}
		if inWindow && len(s.Messages) != int(12-seq) {
			t.Fatalf("id %q: replayed %d, want %d", id, len(s.Messages), 12-seq)
		}
	})
}

// TestUnusedRoomsDropped: a stream alone does not keep a room. Streams to
// made-up names leave nothing behind once closed, so they cannot fill
// MaxRooms; a room someone posted to stays.
func TestUnusedRoomsDropped(t *testing.T) {
	var dropped []string
	m := newManager(t, Config{History: 10, Buffer: 10, MaxRooms: 10, IdleTimeout: time.Hour,
		Hooks: Hooks{RoomDropped: func(r, why string) { dropped = append(dropped, r+":"+why) }}})
	for i := range 100 {
		s, err := m.Subscribe(fmt.Sprintf("squat%d", i), Position{}, nil)
		if err != nil {
			t.Fatalf("stream %d to a made-up room: %v", i, err)
		}
		s.Close()
	}
	if n := m.Len(); n != 0 {
		t.Errorf("%d rooms left by closed streams, want 0", n)
	}
	if len(dropped) != 100 || dropped[0] != "squat0:unused" {
		t.Errorf("RoomDropped saw %d drops, first %v; want 100, squat0:unused", len(dropped), dropped[:min(len(dropped), 1)])
	}

	a, _ := m.Subscribe("lobby", Position{}, nil)
	b, _ := m.Subscribe("lobby", Position{}, nil)
	a.Close()
	if m.Len() != 1 {
		t.Error("the room was dropped while a stream still follows it")
	}
	b.Close()
	if m.Len() != 0 {
		t.Error("the room outlived its last stream")
	}

	post(t, m, "kept", "hello")
	s, _ := m.Subscribe("kept", Position{}, nil)
	s.Close()
	if rooms := m.Rooms(); len(rooms) != 1 || rooms[0].Name != "kept" {
		t.Errorf("rooms = %+v, want the room with a message kept", rooms)
	}
}

// TestFirstPostMakesTheRoom: Create is asked for the first post that keeps
// a room, whether a stream opened the room before it or not, and for no
// later post; its refusal stores nothing and leaves the room to its stream,
// which takes it along when it goes; and Admit is asked before it.
func TestFirstPostMakesTheRoom(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	var asked []string
	refuse := errors.New("too many new rooms")
	submit := func(room string, createErr error) error {
		_, _, err := m.Submit(room, Post{User: "alice", Text: "hi",
			Admit:  func() error { asked = append(asked, "admit"); return nil },
			Create: func() error { asked = append(asked, "create"); return createErr },
		})
		return err
	}
	tests := []struct {
		room      string
		streamed  bool
		createErr error
		want      string // what was asked, of the first post then of a second
	}{
		{"posted", false, nil, "admit,create admit"},
		{"streamed", true, nil, "admit,create admit"},
		{"streamed-refused", true, refuse, "admit,create admit,create"},
	}
	for _, tt := range tests {
		t.Run(tt.room, func(t *testing.T) {
			room := tt.room
			var s *Subscription
			if tt.streamed {
				var err error
				if s, err = m.Subscribe(room, Position{}, nil); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for range 2 {
				asked = nil
				if err := submit(room, tt.createErr); !errors.Is(err, tt.createErr) {
					t.Fatalf("post: %v, want %v", err, tt.createErr)
				}
				got = append(got, strings.Join(asked, ","))
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("asked %q, want %q", got, tt.want)
			}
			if tt.createErr != nil {
				if lastID(m, room) != "" {
					t.Error("a refused post was stored")
				}
				s.Close()
				if lastID(m, room) != "" || slices.ContainsFunc(m.Rooms(), func(i RoomInfo) bool { return i.Name == room }) {
					t.Error("the room outlived its stream")
				}
				return
			}
			if s != nil {
				s.Close()
			}
		})
	}
}

// jsonSize is the size of the JSON of a message of text, posted to room
// probe.
func jsonSize(t *testing.T, m *Manager, text string) int {
	t.Helper()
	msg, _, _ := m.Submit("probe", Post{User: "alice", Text: text})
	b, _ := msg.MarshalJSON()
	return len(b)
}

// TestReplayByteBudget: a replay stops before MaxReplayBytes of messages'
// JSON and says so; the rest comes from where it stopped, with no gap.
// Messages of "<" cost six bytes per byte in JSON, and the budget counts
// what is sent.
func TestReplayByteBudget(t *testing.T) {
	const budget = 64 << 10
	m := newManager(t, Config{History: 1000, Buffer: 10, MaxReplayBytes: budget})
	big := strings.Repeat("<", 4<<10)
	size := jsonSize(t, m, big)
	if size < 6*len(big) {
		t.Fatalf("the JSON of %d bytes of '<' is %d bytes; escaping changed", len(big), size)
	}
	var want []string
	for range 20 {
		want = append(want, post(t, m, "lobby", big)[0].ID)
	}
	perReplay := budget / size

	for _, tt := range []struct {
		name string
		pos  Position
		from int // index in want of the first message
	}{
		{"history", Position{History: 1000}, 0},
		{"resume", Position{LastEventID: want[2]}, 3},
		{"reset", Position{LastEventID: "foreign-1"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := m.Subscribe("lobby", tt.pos, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if len(s.Messages) != perReplay || !s.Truncated {
				t.Errorf("replay of %d messages, truncated=%v; want %d, truncated", len(s.Messages), s.Truncated, perReplay)
			}
			start := 0
			for _, e := range s.Events {
				start += len(e.JSON())
			}
			wantEvents := perReplay
			if s.Reset {
				wantEvents++ // the reset event first
			}
			if len(s.Events) != wantEvents || s.Events[len(s.Events)-1].Message != s.Messages[perReplay-1] {
				t.Errorf("the stream starts with %d events, want %d ending with the replay's last message", len(s.Events), wantEvents)
			}
			if start > budget+100 {
				t.Errorf("the stream's start is %d bytes of JSON, want at most the budget %d and a reset", start, budget)
			}
			if s.Messages[0].ID != want[tt.from] {
				t.Errorf("replay starts at %s, want %s", s.Messages[0].ID, want[tt.from])
			}
			// Coming back after the last message continues without a gap.
			last := s.Messages[len(s.Messages)-1].ID
			rest, _ := m.Subscribe("lobby", Position{LastEventID: last}, nil)
			defer rest.Close()
			if rest.Reset || len(rest.Messages) == 0 || rest.Messages[0].ID != want[tt.from+perReplay] {
				t.Errorf("resume after a cut replay: reset=%v, %d messages", rest.Reset, len(rest.Messages))
			}
		})
	}

	rep, err := m.Messages("lobby", "", "", 1000)
	if err != nil || len(rep.Messages) != perReplay || !rep.Truncated || rep.Events != nil {
		t.Errorf("Messages: %d, truncated=%v, events=%d, %v; want %d, truncated, no events", len(rep.Messages), rep.Truncated, len(rep.Events), err, perReplay)
	}
	if rep, _ := m.Messages("lobby", want[len(want)-1-perReplay], "", 1000); len(rep.Messages) != perReplay || rep.Truncated {
		t.Errorf("a page within the budget: %d messages, truncated=%v; want %d, not truncated", len(rep.Messages), rep.Truncated, perReplay)
	}
	// Paging back, a cut page keeps the newest: the reader pages back
	// again from the oldest it got.
	newest := want[len(want)-1]
	if rep, _ := m.Messages("lobby", "", newest, 1000); len(rep.Messages) != perReplay || !rep.Truncated || rep.Start || rep.Messages[perReplay-1].ID != want[len(want)-2] {
		t.Errorf("a page back from %s: %d messages, truncated=%v, start=%v; want the %d before it, truncated, not the start", newest, len(rep.Messages), rep.Truncated, rep.Start, perReplay)
	}
	if rep, _ := m.Messages("lobby", "", want[perReplay], 1000); len(rep.Messages) != perReplay || rep.Truncated || !rep.Start {
		t.Errorf("the first page: %d messages, truncated=%v, start=%v; want %d, whole, the start", len(rep.Messages), rep.Truncated, rep.Start, perReplay)
	}

	// One message over the budget still goes out, alone, or nothing would.
	tiny := newManager(t, Config{History: 10, Buffer: 10, MaxReplayBytes: 10})
	post(t, tiny, "lobby", "a", "b")
	s, _ := tiny.Subscribe("lobby", Position{History: 2}, nil)
	defer s.Close()
	if texts(s.Messages) != "a" || !s.Truncated {
		t.Errorf("replay over a tiny budget: %q truncated=%v; want a, truncated", texts(s.Messages), s.Truncated)
	}
}

// TestMessagesSayStart: an answer of Messages says Start when nothing
// older than its messages is kept, so that a reader paging back stops
// there, whichever way it asked.
func TestMessagesSayStart(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	var ids []string
	for i := range 12 {
		ids = append(ids, post(t, m, "lobby", fmt.Sprint(i))[0].ID)
	}
	for _, tt := range []struct {
		name, after, before string
		limit               int
		texts               string
		start               bool
	}{
		{"all kept", "", "", 10, "2,3,4,5,6,7,8,9,10,11", true},
		{"the newest", "", "", 5, "7,8,9,10,11", false},
		{"back to the oldest", "", ids[7], 5, "2,3,4,5,6", true},
		{"back short of it", "", ids[8], 5, "3,4,5,6,7", false},
		{"back before the oldest", "", ids[2], 5, "", true},
		{"back from trimmed", "", ids[1], 5, "", true},
		{"after, from the oldest", ids[1], "", 3, "2,3,4", true},
		{"after a kept one", ids[2], "", 3, "3,4,5", false},
		{"between", ids[3], ids[6], 10, "4,5", false},
	} {
		rep, err := m.Messages("lobby", tt.after, tt.before, tt.limit)
		if err != nil || texts(rep.Messages) != tt.texts || rep.Start != tt.start {
			t.Errorf("%s: %q start=%v, %v; want %q start=%v", tt.name, texts(rep.Messages), rep.Start, err, tt.texts, tt.start)
		}
	}
}

// TestMinMessageSize: the bound the history copy relies on holds for the
// smallest message there can be.
func TestMinMessageSize(t *testing.T) {
	m := newManager(t, Config{})
	if n := jsonSize(t, m, "x"); n-len("probe")+1 <= minMessageSize {
		t.Errorf("the smallest message's JSON is %d bytes, not more than minMessageSize %d", n-len("probe")+1, minMessageSize)
	}
}

// countingStore counts Resize calls on the histories it opens.
type countingStore struct {
	*LocalStore
	resizes *int
}

func (s countingStore) Open(ctx context.Context, room string, capacity int) (History, error) {
	h, err := s.LocalStore.Open(ctx, room, capacity)
	return countingHistory{h, s.resizes}, err
}

type countingHistory struct {
	History
	resizes *int
}

func (h countingHistory) Resize(ctx context.Context, capacity int) error {
	*h.resizes++
	return h.History.Resize(ctx, capacity)
}

// TestConfigureKeepsRings: a reload that keeps the history size leaves every
// ring alone; one that changes it resizes them.
func TestConfigureKeepsRings(t *testing.T) {
	var resizes int
	m := newManager(t, Config{History: 5, Buffer: 10, Store: countingStore{LocalStore: NewMemoryStore(), resizes: &resizes}})
	post(t, m, "a", "1")
	post(t, m, "b", "1")
	m.Configure(Config{History: 5, Buffer: 20})
	if resizes != 0 {
		t.Errorf("%d rings resized by a config with the same history", resizes)
	}
	m.Configure(Config{History: 3, Buffer: 20})
	if resizes != 2 {
		t.Errorf("%d rings resized by a new history size, want 2", resizes)
	}
}

// TestEvictedHookFollowsConfig: evictions in a room made before a reload
// are reported to the reload's hooks.
func TestEvictedHookFollowsConfig(t *testing.T) {
	var old, current int
	m := newManager(t, Config{History: 10, Buffer: 1, Hooks: Hooks{Evicted: func(string) { old++ }}})
	s, _ := m.Subscribe("lobby", Position{}, nil)
	defer s.Close()
	m.Configure(Config{History: 10, Buffer: 1, Hooks: Hooks{Evicted: func(string) { current++ }}})
	post(t, m, "lobby", "1", "2")
	if old != 0 || current != 1 {
		t.Errorf("eviction reported %d times to the old hooks, %d to the current; want 0, 1", old, current)
	}
}

func TestExpireEndsSubscriptionAfterQueuedEvents(t *testing.T) {
	m := newManager(t, Config{History: 10, Buffer: 10})
	sub, err := m.Subscribe("lobby", Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	post(t, m, "lobby", "before")
	sub.Expire()
	select {
	case <-sub.Ready():
	case <-time.After(time.Second):
		t.Fatal("Expire did not wake the reader")
	}
	events, err := sub.Take(nil)
	if !errors.Is(err, ErrExpired) || len(events) != 2 || events[0].Message.Message != "before" || events[1] != ExpiredEvent {
		t.Fatalf("Take after Expire: %d events, %v; want the queued message, then ExpiredEvent and ErrExpired", len(events), err)
	}
}
