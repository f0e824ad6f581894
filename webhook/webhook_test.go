package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/rooms/filestore"
	"github.com/caddy-chat/caddy-chat/rooms/redisstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver is a site's endpoint: it verifies each batch's signature and
// keeps the events, answering as answer says (200 when nil).
type receiver struct {
	t      testing.TB
	secret hooks.Secret
	srv    *httptest.Server

	mu       sync.Mutex
	events   []Event
	posts    int
	inFlight int
	answer   func(post int) int // status of the post'th POST, from 1
	hanging  chan struct{}      // when set, POSTs hang until it closes
}

func newReceiver(t testing.TB) *receiver {
	t.Helper()
	secret, err := hooks.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.posts++
	r.inFlight++
	post, answer, hanging := r.posts, r.answer, r.hanging
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}()
	if hanging != nil {
		select {
		case <-hanging:
		case <-req.Context().Done():
			return // the sender gave up: nothing was taken
		}
	}
	if err := r.secret.Verify(req.Header, body, time.Now()); err != nil {
		r.t.Errorf("a batch's signature does not verify: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	status := http.StatusOK
	if answer != nil {
		status = answer(post)
	}
	if status == http.StatusOK {
		var b Batch
		if err := json.Unmarshal(body, &b); err != nil {
			r.t.Errorf("a batch is not JSON: %v: %s", err, body)
		}
		r.mu.Lock()
		r.events = append(r.events, b.Events...)
		r.mu.Unlock()
	}
	w.WriteHeader(status)
}

// got returns the events received so far.
func (r *receiver) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor waits until n events of type typ arrived, and returns them.
func (r *receiver) waitFor(typ string, n int) []Event {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var of []Event
		for _, ev := range r.got() {
			if ev.Type == typ {
				of = append(of, ev)
			}
		}
		if len(of) >= n {
			return of
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d %s events arrived in 10 s, want %d", len(of), typ, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counts is a Stats that counts.
type counts struct {
	delivered, failed, retried, dropped atomic.Int64
}

func (c *counts) Delivered(n int, _ time.Duration) { c.delivered.Add(int64(n)) }
func (c *counts) Failed()                          { c.failed.Add(1) }
func (c *counts) Retried()                         { c.retried.Add(1) }
func (c *counts) Dropped(n int)                    { c.dropped.Add(int64(n)) }

// node is a Manager with webhooks, wired as Caddy's chat app wires them.
type node struct {
	*rooms.Manager
	client     *hooks.Client
	closeStore func() error // nil for the memory store
	stopOnce   sync.Once
	mu         sync.Mutex
	hooks      []*Webhook
}

// newRedisNode is newNode on a Redis store of its own client to opts'
// server, its keys under prefix, which the node closes as it stops.
func newRedisNode(t testing.TB, opts *redis.Options, prefix string) *node {
	t.Helper()
	s := redisstore.New(redis.NewClient(opts), redisstore.Options{Prefix: prefix})
	n := newNode(t, s, 100)
	n.closeStore = s.Close
	return n
}

// newNode opens a Manager on store, whose hooks feed the node's webhooks.
func newNode(t testing.TB, store rooms.Store, history int) *node {
	t.Helper()
	n := &node{client: hooks.NewClient()}
	each := func(f func(*Webhook)) {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, w := range n.hooks {
			f(w)
		}
	}
	m, err := rooms.Open(t.Context(), rooms.Config{History: history, Buffer: 100, Store: store, Hooks: rooms.Hooks{
		Published:   func(room string, _ int) { each(func(w *Webhook) { w.Published(room) }) },
		Presence:    func(room string, c rooms.PresenceChange) { each(func(w *Webhook) { w.Presence(room, c) }) },
		Banned:      func(b rooms.Ban) { each(func(w *Webhook) { w.Banned(b) }) },
		RoomDropped: func(room, reason string) { each(func(w *Webhook) { w.RoomDropped(room, reason) }) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	n.Manager = m
	t.Cleanup(n.stop)
	return n
}

// hook starts a webhook of cfg, to r, with secret and quick batches
// unless cfg says otherwise.
func (n *node) hook(t testing.TB, r *receiver, cfg Config, stats Stats) *Webhook {
	t.Helper()
	cfg.URL, cfg.Secret = r.srv.URL, r.secret
	if cfg.BatchWait == 0 {
		cfg.BatchWait = 20 * time.Millisecond
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 20 * time.Millisecond
	}
	if stats == nil {
		stats = new(counts)
	}
	w := Start(cfg, n.Manager, n.client, stats, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	n.mu.Lock()
	n.hooks = append(n.hooks, w)
	n.mu.Unlock()
	return w
}

// stop stops the node's webhooks, then its Manager and store.
func (n *node) stop() {
	n.stopOnce.Do(func() {
		n.mu.Lock()
		hooks := n.hooks
		n.hooks = nil
		n.mu.Unlock()
		for _, w := range hooks {
			w.Stop()
		}
		n.client.Close()
		n.Manager.Close()
		if n.closeStore != nil {
			n.closeStore()
		}
	})
}

func post(t *testing.T, m *rooms.Manager, room string, texts ...string) []rooms.Message {
	t.Helper()
	var out []rooms.Message
	for _, text := range texts {
		msg, _, err := m.Submit(room, rooms.Post{User: "alice", Text: text})
		if err != nil {
			t.Fatalf("posting %q to %s: %v", text, room, err)
		}
		out = append(out, msg)
	}
	return out
}

func texts(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i)
	}
	return out
}

// checkOnceInOrder fails t unless events hold each message of want once,
// in want's order.
func checkOnceInOrder(t *testing.T, events []Event, want []rooms.Message) {
	t.Helper()
	var got []string
	for _, ev := range events {
		if ev.Type == EventMessage && ev.Room == want[0].Room {
			got = append(got, ev.ID)
		}
	}
	var ids []string
	for _, m := range want {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("room %s's messages arrived as %v, want %v once each, in order", want[0].Room, got, ids)
	}
}

// TestBatchesSignedInRoomOrder: signed batches carry every event of every
// room once, each room's in order: the room's creation, its messages, an
// edit and a delete; no batch passes BatchSize.
func TestBatchesSignedInRoomOrder(t *testing.T) {
	r := newReceiver(t)
	n := newNode(t, rooms.NewMemoryStore(), 100)
	n.hook(t, r, Config{BatchSize: 7}, nil)
	var lobby, support []rooms.Message
	for i := range 20 {
		lobby = append(lobby, post(t, n.Manager, "lobby", fmt.Sprint("hi ", i))...)
		support = append(support, post(t, n.Manager, "support", fmt.Sprint("help ", i))...)
	}
	if _, _, err := n.Submit("lobby", rooms.Post{User: "alice", Action: rooms.ActionEdit, Target: lobby[3].ID, Text: "edited"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Submit("lobby", rooms.Post{User: "alice", Action: rooms.ActionDelete, Target: lobby[4].ID}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(EventMessage, 40)
	r.waitFor(EventDelete, 1)
	events := r.got()
	checkOnceInOrder(t, events, lobby)
	checkOnceInOrder(t, events, support)
	var lobbyTypes []string
	for _, ev := range events {
		if ev.Room == "lobby" {
			lobbyTypes = append(lobbyTypes, ev.Type)
		}
	}
	if lobbyTypes[0] != EventRoomCreated || !slices.Equal(lobbyTypes[len(lobbyTypes)-2:], []string{EventEdit, EventDelete}) {
		t.Errorf("the lobby's events are %v: want room_created first, edit and delete last", lobbyTypes)
	}
	edits := r.waitFor(EventEdit, 1)
	var edit struct{ Target, Message string }
	if err := json.Unmarshal(edits[0].Data, &edit); err != nil || edit.Target != lobby[3].ID || edit.Message != "edited" {
		t.Errorf("the edit event's data is %s", edits[0].Data)
	}
	r.mu.Lock()
	posts := r.posts
	r.mu.Unlock()
	if min := (len(events) + 6) / 7; posts < min {
		t.Errorf("%d events came in %d posts: a batch passed 7 events", len(events), posts)
	}
}

// TestRetriesAfterFailures: batches answered 500, or not at all in time,
// are retried until the receiver takes them, then delivered once, in
// order.
func TestRetriesAfterFailures(t *testing.T) {
	r := newReceiver(t)
	r.answer = func(post int) int {
		if post <= 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	stats := new(counts)
	n := newNode(t, rooms.NewMemoryStore(), 100)
	n.hook(t, r, Config{Events: []string{EventMessage}}, stats)
	want := post(t, n.Manager, "lobby", texts("hello", 5)...)
	r.waitFor(EventMessage, 5)
	checkOnceInOrder(t, r.got(), want)
	if f, re := stats.failed.Load(), stats.retried.Load(); f != 3 || re != 3 {
		t.Errorf("counted %d failures and %d retries, want 3 and 3", f, re)
	}
	// The receiver keeps a batch before it answers; the webhook counts it
	// once the answer is in.
	for deadline := time.Now().Add(5 * time.Second); stats.delivered.Load() < 5 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if d := stats.delivered.Load(); d != 5 {
		t.Errorf("counted %d delivered, want 5", d)
	}
}

// TestReceiverDownThirtySeconds: a receiver that answers 503 for 30 s,
// while the room goes on posting, then comes back, gets every message once
// (a steady run sends none twice), in order, with the default backoff.
func TestReceiverDownThirtySeconds(t *testing.T) {
	t.Parallel()
	back := time.Now().Add(30 * time.Second)
	r := newReceiver(t)
	r.answer = func(int) int {
		if time.Now().Before(back) {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	stats := new(counts)
	n := newNode(t, rooms.NewMemoryStore(), 1000)
	n.hook(t, r, Config{Events: []string{EventMessage}, Backoff: DefaultBackoff}, stats)
	var want []rooms.Message
	for i := 0; time.Now().Before(back); i++ {
		want = append(want, post(t, n.Manager, "lobby", fmt.Sprint("during the outage ", i))...)
		time.Sleep(250 * time.Millisecond)
	}
	want = append(want, post(t, n.Manager, "lobby", "after it")...)
	deadline := back.Add(time.Minute)
	for len(r.got()) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages a minute after the receiver came back", len(r.got()), len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // time for a duplicate to show
	checkOnceInOrder(t, r.got(), want)
	if stats.retried.Load() == 0 {
		t.Error("no retry was counted through the outage")
	}
	t.Logf("%d messages delivered %v after the receiver came back, after %d retries", len(want), time.Since(back), stats.retried.Load())
}

// TestGoneDisables: a receiver that answers 410 Gone gets no more posts.
func TestGoneDisables(t *testing.T) {
	r := newReceiver(t)
	r.answer = func(int) int { return http.StatusGone }
	stats := new(counts)
	n := newNode(t, rooms.NewMemoryStore(), 100)
	n.hook(t, r, Config{}, stats)
	post(t, n.Manager, "lobby", "first")
	deadline := time.Now().Add(5 * time.Second)
	for stats.failed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	post(t, n.Manager, "lobby", texts("later", 5)...)
	time.Sleep(300 * time.Millisecond)
	r.mu.Lock()
	posts := r.posts
	r.mu.Unlock()
	if posts != 1 || stats.retried.Load() != 0 {
		t.Fatalf("the receiver got %d posts and %d retries after answering 410, want 1 and none", posts, stats.retried.Load())
	}
}

// TestRestartResumesFromPosition: with the file store, a webhook stopped
// while its receiver hangs ends within a second, and after a restart
// every event is delivered, from where delivery stopped.
func TestRestartResumesFromPosition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	open := func() *node {
		s, err := filestore.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		n := newNode(t, s, 100)
		n.closeStore = s.Close
		return n
	}
	r := newReceiver(t)
	n := open()
	n.hook(t, r, Config{Events: []string{EventMessage}, BatchSize: 5}, nil)
	first := post(t, n.Manager, "lobby", texts("before", 10)...)
	r.waitFor(EventMessage, 10)
	r.mu.Lock()
	r.hanging = make(chan struct{})
	r.mu.Unlock()
	more := post(t, n.Manager, "lobby", texts("during", 10)...)
	time.Sleep(100 * time.Millisecond) // a POST is in flight, hanging
	began := time.Now()
	n.stop()
	if d := time.Since(began); d > time.Second {
		t.Errorf("stopping with a POST in flight took %v, want within 1 s", d)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		idle := r.inFlight == 0
		r.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver never saw the stopped webhook's POST end")
		}
	}
	r.mu.Lock()
	close(r.hanging)
	r.hanging = nil
	r.mu.Unlock()

	n = open()
	n.hook(t, r, Config{Events: []string{EventMessage}, BatchSize: 5}, nil)
	last := post(t, n.Manager, "lobby", "after")
	r.waitFor(EventMessage, 21)
	checkOnceInOrder(t, r.got(), slices.Concat(first, more, last))
}

// TestHistoryBoundsWhatWaits: with the memory store, what waits for a
// receiver that is down is bounded by the history; what it passed is
// counted as dropped, and the rest delivered.
func TestHistoryBoundsWhatWaits(t *testing.T) {
	r := newReceiver(t)
	var down atomic.Bool
	down.Store(true)
	r.answer = func(int) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	stats := new(counts)
	n := newNode(t, rooms.NewMemoryStore(), 5)
	n.hook(t, r, Config{Events: []string{EventMessage}, BatchSize: 2}, stats)
	down.Store(false)
	post(t, n.Manager, "lobby", "first")
	r.waitFor(EventMessage, 1)
	down.Store(true)
	post(t, n.Manager, "lobby", texts("hello", 30)...)
	for stats.failed.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for stats.delivered.Load()+stats.dropped.Load() < 31 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	delivered, dropped := stats.delivered.Load(), stats.dropped.Load()
	if delivered+dropped != 31 || dropped < 20 || delivered > 11 {
		t.Fatalf("of 31 messages %d were delivered and %d dropped; want all accounted for, at most 11 delivered", delivered, dropped)
	}
	if got := len(r.got()); int64(got) != delivered {
		t.Fatalf("the receiver got %d events, the webhook counted %d", got, delivered)
	}
}

// TestTwoNodesOnRedisDeliverOnce: two nodes on one Redis, each with the
// webhook, deliver each message once while both live, and the survivor
// delivers the rest after the other dies holding the lease.
func TestTwoNodesOnRedisDeliverOnce(t *testing.T) {
	srv := redistest.Start(t)
	open := func() *node { return newRedisNode(t, &redis.Options{Addr: srv.Addr}, "once:") }
	r := newReceiver(t)
	a, b := open(), open()
	a.hook(t, r, Config{Events: []string{EventMessage}}, nil)
	b.hook(t, r, Config{Events: []string{EventMessage}}, nil)
	var want []rooms.Message
	for i := range 30 {
		p := a
		if i%2 == 1 {
			p = b
		}
		want = append(want, post(t, p.Manager, "lobby", fmt.Sprint("hello ", i))...)
	}
	r.waitFor(EventMessage, 30)
	time.Sleep(300 * time.Millisecond) // a duplicate would come now
	checkOnceInOrder(t, r.got(), want)

	a.stop() // as a dead node, it leaves its lease to expire... or releases it
	want = append(want, post(t, b.Manager, "lobby", texts("survivor", 5)...)...)
	r.waitFor(EventMessage, 35)
	checkOnceInOrder(t, r.got(), want)
}

// TestHangingReceiverDoesNotSlowPosts: posts take no longer while the
// webhook's receiver hangs than while it answers.
func TestHangingReceiverDoesNotSlowPosts(t *testing.T) {
	r := newReceiver(t)
	r.hanging = make(chan struct{})
	defer close(r.hanging)
	n := newNode(t, rooms.NewMemoryStore(), 100)
	n.hook(t, r, Config{}, nil)
	var worst time.Duration
	for i := range 200 {
		began := time.Now()
		post(t, n.Manager, fmt.Sprint("room", i%10), "hello")
		worst = max(worst, time.Since(began))
	}
	if worst > 100*time.Millisecond {
		t.Fatalf("the slowest post took %v with a hanging receiver", worst)
	}
}

// TestPresenceAndBans: joins and leaves follow presence, coalesced; a ban
// is delivered with its room; room patterns filter rooms.
func TestPresenceAndBans(t *testing.T) {
	r := newReceiver(t)
	n := newNode(t, rooms.NewMemoryStore(), 100)
	n.hook(t, r, Config{Events: []string{EventJoin, EventLeave, EventBan}, Rooms: []string{"support-*"}}, nil)
	sub := func(room, user string) *rooms.Subscription {
		s, err := n.Subscribe(room, rooms.Position{User: user}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	other := sub("lobby", "eve")
	defer other.Close()
	alice, bob := sub("support-1", "alice"), sub("support-1", "bob")
	joins := r.waitFor(EventJoin, 1)
	var users Users
	if err := json.Unmarshal(joins[0].Data, &users); err != nil || !slices.Equal(users.Users, []string{"alice", "bob"}) || joins[0].Room != "support-1" {
		t.Fatalf("join event %+v: want alice and bob, together, in support-1", joins[0])
	}
	alice.Close()
	bob.Close()
	r.waitFor(EventLeave, 1)
	if _, err := n.PutBan(rooms.Ban{Room: "support-1", Subject: "user:mallory"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.PutBan(rooms.Ban{Room: "lobby", Subject: "user:mallory"}); err != nil {
		t.Fatal(err)
	}
	bans := r.waitFor(EventBan, 1)
	time.Sleep(100 * time.Millisecond)
	for _, ev := range r.got() {
		if ev.Room == "lobby" {
			t.Errorf("an event of the lobby passed the room pattern: %+v", ev)
		}
	}
	if bans[0].Room != "support-1" {
		t.Errorf("ban event %+v", bans[0])
	}
}

// TestStopCountsWhatItCannotSendAgain: bans, in the batch in flight or
// queued behind it when the webhook stops (a reload), are in no log that
// the next webhook could read again: they are counted as dropped. The
// room's message, in its log, is sent by the next webhook of the URL.
func TestStopCountsWhatItCannotSendAgain(t *testing.T) {
	r := newReceiver(t)
	var down atomic.Bool
	down.Store(true)
	r.answer = func(int) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	n := newNode(t, rooms.NewMemoryStore(), 100)
	stats := new(counts)
	cfg := Config{Events: []string{EventBan, EventMessage}, BatchSize: 1}
	w := n.hook(t, r, cfg, stats)
	for _, s := range []string{"user:a", "user:b", "user:c"} {
		if _, err := n.PutBan(rooms.Ban{Room: "lobby", Subject: s}); err != nil {
			t.Fatal(err)
		}
	}
	sent := post(t, n.Manager, "lobby", "hello")
	for stats.failed.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	n.mu.Lock()
	n.hooks = nil
	n.mu.Unlock()
	w.Stop()
	if d := stats.dropped.Load(); d != 3 {
		t.Errorf("3 bans never delivered as the webhook stopped, %d counted as dropped", d)
	}
	down.Store(false)
	n.hook(t, r, cfg, stats)
	checkOnceInOrder(t, r.waitFor(EventMessage, 1), sent)
}

// TestValidate refuses what a Caddyfile might get wrong.
func TestValidate(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{URL: "https://example.com/hook"}, true},
		{Config{URL: "http://127.0.0.1:9000/hook", Events: []string{EventMessage, EventJoin}, Rooms: []string{"support-*"}, BatchSize: 1000, BatchWait: time.Minute}, true},
		{Config{URL: "ftp://example.com/hook"}, false},
		{Config{URL: "/hook"}, false},
		{Config{URL: "https://user:pass@example.com/hook"}, false},
		{Config{URL: "https://example.com/hook", Events: []string{"messages"}}, false},
		{Config{URL: "https://example.com/hook", Rooms: []string{"support-["}}, false},
		{Config{URL: "https://example.com/hook", BatchSize: 1001}, false},
		{Config{URL: "https://example.com/hook", BatchWait: 2 * time.Minute}, false},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok %v", c.cfg, err, c.ok)
		}
	}
}

// TestLeasePassesWhenHolderDies: of two nodes on one Redis, the one that
// delivers a room dies mid-delivery, cut off from Redis with its lease
// held; the survivor takes the lease once it expires and delivers every
// message, at least once, in order.
func TestLeasePassesWhenHolderDies(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	open := func(addr string) *node { return newRedisNode(t, &redis.Options{Addr: addr, MaxRetries: -1}, "dies:") }
	r := newReceiver(t)
	r.answer = func(int) int {
		time.Sleep(100 * time.Millisecond) // a receiver slow enough to be caught mid-delivery
		return http.StatusOK
	}
	holder, survivor := open(proxy.Addr), open(srv.Addr)
	cfg := Config{Events: []string{EventMessage}, BatchSize: 5}
	holder.hook(t, r, cfg, nil)
	sent := post(t, holder.Manager, "lobby", texts("hello", 80)...)
	r.waitFor(EventMessage, 5)
	survivor.hook(t, r, cfg, nil)
	// The survivor has not opened the room: it learns of it from the
	// rooms Redis lists, as a node does within a second or so.
	for deadline := time.Now().Add(5 * time.Second); !slices.ContainsFunc(survivor.Rooms(), func(r rooms.RoomInfo) bool { return r.Name == "lobby" }); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the survivor never listed the room")
		}
	}
	if n := len(r.got()); n == len(sent) {
		t.Fatal("every message was delivered before the holder died: the receiver is too quick for the test")
	}
	proxy.Cut()
	began := time.Now()
	holder.stop() // it cannot release its lease: it dies holding it
	deadline := time.Now().Add(minLease + 10*time.Second)
	for {
		got := map[string]bool{}
		for _, ev := range r.got() {
			got[ev.ID] = true
		}
		if len(got) == len(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages delivered %v after the holder died", len(got), len(sent), time.Since(began))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Each message's first delivery comes in order; only the batch in
	// flight when the holder died may come twice.
	var first []string
	seen := map[string]bool{}
	for _, ev := range r.got() {
		if !seen[ev.ID] {
			seen[ev.ID] = true
			first = append(first, ev.ID)
		}
	}
	var want []string
	for _, m := range sent {
		want = append(want, m.ID)
	}
	if !slices.Equal(first, want) {
		t.Errorf("first deliveries came as %v, want %v", first, want)
	}
	if dups := len(r.got()) - len(sent); dups > cfg.BatchSize {
		t.Errorf("%d duplicates: more than the batch in flight", dups)
	}
	t.Logf("the survivor delivered the rest %v after the holder died", time.Since(began))
}

// TestStopEndsWithinASecondWithASlowRedis: with a POST in flight for five
// rooms and Redis grown slow to answer, Stop ends within a second: the
// rooms' leases are let go all at once, and briefly, as they expire
// anyway.
func TestStopEndsWithinASecondWithASlowRedis(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	// As Caddy's chat app opens it: calls end with their context.
	n := newRedisNode(t, &redis.Options{Addr: proxy.Addr, MaxRetries: -1, ContextTimeoutEnabled: true}, "slow:")
	r := newReceiver(t)
	r.mu.Lock()
	r.hanging = make(chan struct{})
	r.mu.Unlock()
	defer close(r.hanging)
	w := n.hook(t, r, Config{Events: []string{EventMessage}}, nil)
	for i := range 5 {
		post(t, n.Manager, fmt.Sprint("room", i), "hello")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		busy := r.inFlight > 0
		r.mu.Unlock()
		if busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no POST in flight")
		}
	}
	proxy.Delay(2 * time.Second)
	defer proxy.Delay(0)
	began := time.Now()
	w.Stop()
	if took := time.Since(began); took > time.Second {
		t.Errorf("Stop took %v with a POST in flight and Redis slow to answer, want within 1 s", took)
	}
}

// TestSinceIsKeptAgainAtEachStart: in Redis, where positions expire, the
// key that says when a webhook began is set again, with a full TTL, each
// time the webhook starts: a webhook restarted now and then keeps its
// beginning, and a room it had not delivered yet keeps its messages.
func TestSinceIsKeptAgainAtEachStart(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{Prefix: "since:"})
	n := newNode(t, s, 100)
	n.closeStore = s.Close
	s.SetIdleTimeout(time.Hour) // as Caddy's chat app sets it: positions expire
	r := newReceiver(t)
	r.answer = func(int) int { return http.StatusServiceUnavailable }
	cfg := Config{Events: []string{EventMessage}}
	key := "since:pos:{" + (Config{URL: r.srv.URL}).name() + " since}"
	w := n.hook(t, r, cfg, nil)
	began, err := rdb.Get(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("the webhook did not keep when it began: %v", err)
	}
	n.mu.Lock()
	n.hooks = nil
	n.mu.Unlock()
	w.Stop()
	// Most of the TTL has passed.
	if err := rdb.Expire(t.Context(), key, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	n.hook(t, r, cfg, nil)
	ttl, err := rdb.TTL(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl < 47*time.Hour {
		t.Errorf("after a restart, the beginning expires in %v: want it set again for 48 h", ttl)
	}
	if again, _ := rdb.Get(t.Context(), key).Result(); again != began {
		t.Errorf("the webhook began at %s, and at %s after a restart: want the first", began, again)
	}
}

// TestNoFalseLeaveOnRedis: of two nodes on one Redis, bob stays in a room
// on node b while alice comes and goes on node a, whose room is let go as
// she leaves: the receiver hears that alice left, once, and never that bob
// did.
func TestNoFalseLeaveOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	open := func() *node { return newRedisNode(t, &redis.Options{Addr: srv.Addr}, "leave:") }
	r := newReceiver(t)
	a, b := open(), open()
	cfg := Config{Events: []string{EventJoin, EventLeave}}
	a.hook(t, r, cfg, nil)
	b.hook(t, r, cfg, nil)
	bob, err := b.Subscribe("lobby", rooms.Position{User: "bob"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	r.waitFor(EventJoin, 1)
	alice, err := a.Subscribe("lobby", rooms.Position{User: "alice"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // a's census hears of bob
	alice.Close()
	r.waitFor(EventLeave, 1)
	time.Sleep(3 * time.Second) // b's census hears that alice left
	leaves := 0
	for _, ev := range r.got() {
		if ev.Type != EventLeave {
			continue
		}
		var users Users
		json.Unmarshal(ev.Data, &users)
		if slices.Contains(users.Users, "bob") {
			t.Errorf("the receiver heard that bob left, while his stream on node b is open: %s", ev.Data)
		}
		if slices.Contains(users.Users, "alice") {
			leaves++
		}
	}
	if leaves != 1 {
		t.Errorf("the receiver heard %d times that alice left, want once: %+v", leaves, r.got())
	}
}
