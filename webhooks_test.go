package chat

// Webhooks with a real Caddy: signed batches in each room's order, a
// receiver that hangs through posts and a reload, and a kill -9 of the
// binary mid-delivery, with store file and with two nodes on Redis.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/webhook"
)

// webhookSecret signs the batches of the tests' webhooks.
const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// siteReceiver is a site's webhook endpoint, as a site owner would write
// one: it verifies each batch's signature and keeps its events. While
// hang is set, it holds each POST until the sender gives up.
type siteReceiver struct {
	*httptest.Server
	hang     atomic.Bool
	inFlight atomic.Int32
	slow     atomic.Int64 // how long each POST takes to answer, in nanoseconds

	mu     sync.Mutex
	events []webhook.Event
}

func startSiteReceiver(t *testing.T) *siteReceiver {
	t.Helper()
	secret, err := hooks.ParseSecret(webhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &siteReceiver{}
	var bad atomic.Pointer[string]
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.inFlight.Add(1)
		defer r.inFlight.Add(-1)
		body, _ := io.ReadAll(req.Body)
		if err := secret.Verify(req.Header, body, time.Now()); err != nil {
			msg := err.Error()
			bad.Store(&msg)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.hang.Load() {
			<-req.Context().Done()
			return
		}
		time.Sleep(time.Duration(r.slow.Load()))
		var b webhook.Batch
		if err := json.Unmarshal(body, &b); err != nil {
			http.Error(w, "not JSON", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.events = append(r.events, b.Events...)
		r.mu.Unlock()
	}))
	t.Cleanup(func() {
		r.Close()
		if msg := bad.Load(); msg != nil {
			t.Errorf("a batch failed verification: %s", *msg)
		}
	})
	return r
}

// hook is the webhook option that posts to r the events of the rooms
// that match pattern, in quick batches.
func (r *siteReceiver) hook(pattern string) string {
	return fmt.Sprintf("webhook %s {\n\t\t\tsecret %s\n\t\t\tevents message edit delete room_created\n\t\t\trooms %s\n\t\t\tbatch 10 50ms\n\t\t}", r.URL, webhookSecret, pattern)
}

// messageIDs returns the ids of the message events of room received so
// far, in the order they came.
func (r *siteReceiver) messageIDs(room string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, ev := range r.events {
		if ev.Type == webhook.EventMessage && ev.Room == room {
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

// idsOf returns the ids of msgs.
func idsOf(msgs []rooms.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

// TestWebhookDeliversSignedBatchesInRoomOrder: a site's receiver gets every
// message of its rooms once, each room's in order, after the room's
// creation, in batches it can verify, and the metrics count them.
func TestWebhookDeliversSignedBatchesInRoomOrder(t *testing.T) {
	r := startSiteReceiver(t)
	startCaddy(t, config{
		global: r.hook("TestWebhookDelivers*"),
		site:   "encode gzip\n\tlog\n\theader X-Content-Type-Options nosniff",
	})
	lobby, support := roomFor(t, "lobby"), roomFor(t, "support")
	var sent [2][]rooms.Message
	for i := range 25 {
		sent[0] = append(sent[0], postJSON(t, rootSite, lobby, "alice", fmt.Sprint("hello ", i)))
		sent[1] = append(sent[1], postJSON(t, chatSite+"/chat", support, "bob", fmt.Sprint("help ", i)))
	}
	for i, room := range []string{lobby, support} {
		want := idsOf(sent[i])
		waitFor(t, "the messages of "+room, func() bool { return len(r.messageIDs(room)) >= len(want) })
		if got := r.messageIDs(room); !slices.Equal(got, want) {
			t.Errorf("room %s's messages arrived as %v, want %v once each, in order", room, got, want)
		}
	}
	r.mu.Lock()
	first := r.events[0]
	r.mu.Unlock()
	if first.Type != webhook.EventRoomCreated || first.Room != lobby {
		t.Errorf("the first event is %+v, want the lobby's creation", first)
	}
	// The receiver keeps a batch before it answers; the webhook counts it
	// once the answer is in.
	series := fmt.Sprintf(`caddy_chat_webhook_events_total{outcome="delivered",url=%q}`, r.URL)
	waitFor(t, series+" to reach 52", func() bool { return metric(t, series) >= 52 })
}

// TestWebhookHangingReceiver: posts take no longer while the receiver
// hangs than while it answers; a reload with a POST in flight ends it
// within a second, and once the receiver answers again, the new config
// delivers every message once, in order.
func TestWebhookHangingReceiver(t *testing.T) {
	r := startSiteReceiver(t)
	cfg := config{global: r.hook("TestWebhookHanging*")}
	startCaddy(t, cfg)
	room := roomFor(t, "hang")
	p99 := func() (time.Duration, []rooms.Message) {
		var took []time.Duration
		var sent []rooms.Message
		for i := range 100 {
			began := time.Now()
			sent = append(sent, postJSON(t, rootSite, room, "alice", fmt.Sprint("m", i)))
			took = append(took, time.Since(began))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		return took[98], sent
	}
	answering, sent := p99()
	waitFor(t, "the first messages", func() bool { return len(r.messageIDs(room)) == 100 })
	r.hang.Store(true)
	hanging, more := p99()
	sent = append(sent, more...)
	t.Logf("p99 of posts: %v with the receiver answering, %v with it hanging", answering, hanging)
	if hanging > 2*answering+20*time.Millisecond {
		t.Errorf("p99 of posts %v while the receiver hangs, %v while it answers", hanging, answering)
	}
	waitFor(t, "a POST to hang", func() bool { return r.inFlight.Load() > 0 })
	began := time.Now()
	cfg.site = "header X-Reloaded yes" // another config: Caddy skips a reload of the one it runs
	reload(t, cfg)
	if took := time.Since(began); took > 1500*time.Millisecond {
		t.Errorf("a reload took %v with a webhook POST in flight", took)
	}
	waitFor(t, "the hanging POST to end", func() bool { return r.inFlight.Load() == 0 })
	r.hang.Store(false)
	want := idsOf(sent)
	waitFor(t, "every message", func() bool { return len(r.messageIDs(room)) >= len(want) })
	if got := r.messageIDs(room); !slices.Equal(got, want) {
		t.Errorf("after the reload the receiver has %d messages, want %d once each, in order", len(got), len(want))
	}
}

// TestCLIWebhookKill: caddy killed with SIGKILL while its webhook is
// behind, with store file: after the restart every message posted before
// the kill is delivered, at least once.
func TestCLIWebhookKill(t *testing.T) {
	r := startSiteReceiver(t)
	r.slow.Store(int64(20 * time.Millisecond))
	dir := t.TempDir()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	cfg := storeConfig(admin, site, filepath.Join(dir, "chat.db"), r.hook("*"), "")
	process, exited := startBinary(t, dir, cfg, site)
	var sent []rooms.Message
	for i := range 300 {
		sent = append(sent, postJSON(t, site, "lobby", "alice", fmt.Sprint("m", i)))
	}
	waitFor(t, "delivery to begin", func() bool { return len(r.messageIDs("lobby")) > 0 })
	if err := process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(wait):
		t.Fatal("caddy did not exit on SIGKILL")
	}
	before := len(r.messageIDs("lobby"))
	if before >= len(sent) {
		t.Fatalf("all %d messages were delivered before the kill: nothing was left to resume", before)
	}
	r.slow.Store(0)
	startBinary(t, dir, cfg, site)
	waitFor(t, "every message after the restart", func() bool {
		got := map[string]bool{}
		for _, id := range r.messageIDs("lobby") {
			got[id] = true
		}
		for _, m := range sent {
			if !got[m.ID] {
				return false
			}
		}
		return true
	})
	t.Logf("%d of %d messages delivered before the kill; %d events after the restart", before, len(sent), len(r.messageIDs("lobby"))-before)
}

// TestCLIWebhookLeaseKill: two caddy binaries on one Redis, the one that
// holds the room's lease killed with SIGKILL mid-delivery: the survivor
// takes the lease once it runs out and delivers every message, posted on
// either node, at least once, each first delivered in the room's order;
// only the batch in flight at the kill may come twice.
func TestCLIWebhookLeaseKill(t *testing.T) {
	srv := redistest.Start(t)
	r := startSiteReceiver(t)
	r.slow.Store(int64(100 * time.Millisecond))
	node := func() (site string, process *os.Process) {
		dir := t.TempDir()
		admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
		cfg := fmt.Sprintf("{\n\tadmin %s\n\tchat {\n\t\tstore redis redis://%s\n\t\t%s\n\t}\n}\n%s {\n\tchat\n}\n",
			admin, srv.Addr, r.hook("*"), site)
		process, _ = startBinary(t, dir, cfg, site)
		return site, process
	}
	// The first node runs alone until it delivers: it holds the lease.
	holderSite, holder := node()
	var sent []rooms.Message
	for i := range 200 {
		sent = append(sent, postJSON(t, holderSite, "lobby", "alice", fmt.Sprint("m", i)))
	}
	waitFor(t, "delivery to begin", func() bool { return len(r.messageIDs("lobby")) > 0 })
	survivorSite, _ := node()
	for i := range 50 {
		sent = append(sent, postJSON(t, survivorSite, "lobby", "bob", fmt.Sprint("n", i)))
	}
	if err := holder.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	before := len(r.messageIDs("lobby"))
	if before >= len(sent) {
		t.Fatalf("all %d messages were delivered before the kill: nothing was left for the survivor", before)
	}
	r.slow.Store(0)
	deadline := time.Now().Add(time.Minute)
	for {
		got := map[string]bool{}
		for _, id := range r.messageIDs("lobby") {
			got[id] = true
		}
		if len(got) == len(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages delivered a minute after the kill", len(got), len(sent))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var first []string
	seen := map[string]bool{}
	for _, id := range r.messageIDs("lobby") {
		if !seen[id] {
			seen[id] = true
			first = append(first, id)
		}
	}
	if want := idsOf(sent); !slices.Equal(first, want) {
		t.Errorf("first deliveries came out of the room's order:\n got %v\nwant %v", first, want)
	}
	if dups := len(r.messageIDs("lobby")) - len(sent); dups > 10 {
		t.Errorf("%d duplicates: more than the one batch in flight at the kill", dups)
	}
	t.Logf("%d of %d delivered before the kill; the survivor delivered the rest %v after it", before, len(sent), time.Since(killed))
}

// TestHandlerWebhook: a webhook of a chat directive, mounted on two sites,
// hears the rooms of the handler's allowlist once each, whichever site
// they are posted on.
func TestHandlerWebhook(t *testing.T) {
	r := startSiteReceiver(t)
	lobby := roomFor(t, "lobby")
	startCaddy(t, config{
		handler: fmt.Sprintf("rooms %s\n\t\twebhook %s {\n\t\t\tsecret %s\n\t\t\tevents message\n\t\t\tbatch 10 50ms\n\t\t}", lobby, r.URL, webhookSecret),
		site:    "encode gzip\n\tlog",
	})
	var sent []rooms.Message
	for i := range 10 {
		sent = append(sent, postJSON(t, rootSite, lobby, "alice", fmt.Sprint("root ", i)))
		sent = append(sent, postJSON(t, chatSite+"/chat", lobby, "bob", fmt.Sprint("chat ", i)))
	}
	want := idsOf(sent)
	waitFor(t, "the lobby's messages", func() bool { return len(r.messageIDs(lobby)) >= len(want) })
	time.Sleep(200 * time.Millisecond) // a second webhook of the same URL would send them again now
	if got := r.messageIDs(lobby); !slices.Equal(got, want) {
		t.Errorf("the lobby's messages arrived as %v, want %v once each, in order", got, want)
	}
}

// TestWebhookURLWithTwoSettingsIsRefused: two handlers with their own rooms
// and one webhook URL would share its delivery positions, and each skip the
// other's messages: the config is refused, naming the URL.
func TestWebhookURLWithTwoSettingsIsRefused(t *testing.T) {
	const receiver = "https://hooks.example.com/chat-events"
	hook := fmt.Sprintf("webhook %s {\n\t\t\tsecret %s\n\t\t\tevents message\n\t\t\tbatch 10 50ms\n\t\t}", receiver, webhookSecret)
	refusesToLoad(t, config{
		handler: "rooms support\n\t\t" + hook,
		site:    "handle_path /sales/* {\n\t\tchat {\n\t\t\trooms sales\n\t\t\t" + hook + "\n\t\t}\n\t}",
	}, "two handlers of other rooms with one webhook URL", "webhook "+receiver+" is configured twice with different settings")
}

// TestWebhookDropsCounted: with the memory store, messages that a
// receiver falls further behind on than the history holds are counted
// as dropped in the metrics, and the rest delivered.
func TestWebhookDropsCounted(t *testing.T) {
	r := startSiteReceiver(t)
	startCaddy(t, config{global: fmt.Sprintf("history 5\n\t\twebhook %s {\n\t\t\tsecret %s\n\t\t\tevents message\n\t\t\trooms TestWebhookDrops*\n\t\t\ttimeout 200ms\n\t\t\tbatch 2 10ms\n\t\t}", r.URL, webhookSecret)})
	room := roomFor(t, "drops")
	postJSON(t, rootSite, room, "alice", "first")
	waitFor(t, "the first message", func() bool { return len(r.messageIDs(room)) == 1 })
	r.hang.Store(true)
	for i := range 30 {
		postJSON(t, rootSite, room, "alice", fmt.Sprint("m", i))
	}
	failures := fmt.Sprintf(`caddy_chat_hook_failures_total{hook="webhook",url=%q}`, r.URL)
	waitFor(t, "a POST to time out", func() bool { return metric(t, failures) > 0 })
	r.hang.Store(false)
	delivered := fmt.Sprintf(`caddy_chat_webhook_events_total{outcome="delivered",url=%q}`, r.URL)
	dropped := fmt.Sprintf(`caddy_chat_webhook_events_total{outcome="dropped",url=%q}`, r.URL)
	waitFor(t, "every message delivered or dropped", func() bool { return metric(t, delivered)+metric(t, dropped) >= 31 })
	if d, got := metric(t, dropped), len(r.messageIDs(room)); d < 20 || float64(got)+d != 31 {
		t.Errorf("%v dropped and %d received of 31 messages; want at least 20 dropped, the rest received", d, got)
	}
}
