// Command chatbench loads a chat server over HTTP and measures it: it opens
// subscribers (SSE streams) over a number of rooms, publishes through POST
// /submit at a set rate per room, each post on its tick whether the one
// before was answered or not (or as fast as it can), and reports
// deliveries per second, publish-to-receive latency, lost, duplicate and
// out-of-order messages, and, given the server's pid, the server's CPU time
// per delivery and memory per subscriber, read from /proc. It also reports
// the submits acknowledged with 201 per second and their latency, and with
// -fsyncs the server's fsync and fdatasync calls per acknowledged submit,
// counted by perf stat:
//
//	chatbench -rooms 1 -subscribers 0 -saturate -publishers 256 -pid 1234 -fsyncs
//
// It speaks only the wire contract, so it measures caddy-chat and the
// reference baseline (cmd/chatbaseline) alike:
//
//	chatbench -url http://127.0.0.1:8080/chat -rooms 10 -subscribers 1000 -rate 20 -duration 30s -pid 1234
//
// -proto picks what the subscribers speak: h1 (HTTP/1.1, the default), h2
// (HTTP/2 over TLS) or h3 (HTTP/3 over QUIC), each subscriber on a
// connection of its own as separate browsers are, or grpc (the
// chat.v1.ChatService/Stream call over TLS and HTTP/2), or quic (bare QUIC
// connections that carry nothing, against chatbaseline -proto quic, for
// quic-go's own cost per connection; with -rate 0). The publisher posts
// over one client of the same protocol (HTTP/2 for grpc; against
// chatbaseline, -subscribe-urls sends gRPC streams to its -grpc address).
// Certificates are not checked. The result counts the protocol each stream
// actually used, and the run fails if one used another than asked for:
//
//	chatbench -proto h3 -url https://127.0.0.1:8443 -rooms 10 -subscribers 1000 -pid 1234
//
// It prints a progress line every second, then a table and the result as one
// line of JSON. With -summarize it reads such lines from files and prints the
// medians per scenario ("<scenario>/plugin" against "<scenario>/baseline").
//
// With -subscribe-urls, the subscribers of every room are spread over
// several servers that share rooms, such as Caddy nodes on one Redis, and
// messages are still published through -url: latency is then measured
// across nodes.
//
// With -receiver, it reads the counts of the hooks' receiver
// (cmd/hookreceiver) as the measured time starts and ends, and reports the
// webhook events and the screen calls it received per second; a call whose
// signature the receiver refused fails the run:
//
//	chatbench -rooms 1 -subscribers 0 -saturate -publishers 256 -receiver http://127.0.0.1:8093
//
// Past about 28,000 connections one source address runs out of ports, TCP
// or UDP, so subscribers are spread over 127.0.0.2, 127.0.0.3, ... as
// sources.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// options are the command line.
type options struct {
	url           string
	subscribeURLs string
	proto         string
	rooms         int
	subscribers   int
	rate          float64
	saturate      bool
	publishers    int
	size          int
	duration      time.Duration
	warmup        time.Duration
	settle        time.Duration
	pid           int
	fsyncs        bool
	perSource     int
	label         string
	deleteEvery   int
	receiver      string
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8080/chat", "base URL of the chat (where /stream and /submit are)")
	flag.StringVar(&o.subscribeURLs, "subscribe-urls", "", "comma-separated base URLs to spread each room's subscribers over (default: -url)")
	flag.StringVar(&o.proto, "proto", "h1", "what subscribers speak: h1, h2, h3 (SSE over HTTP/1.1, HTTP/2 or HTTP/3), grpc (gRPC over HTTP/2) or quic (bare idle QUIC connections, with -rate 0)")
	flag.IntVar(&o.rooms, "rooms", 10, "rooms")
	flag.IntVar(&o.subscribers, "subscribers", 1000, "subscribers in all, spread evenly over the rooms")
	flag.Float64Var(&o.rate, "rate", 20, "messages per second per room; 0 publishes nothing (idle)")
	flag.BoolVar(&o.saturate, "saturate", false, "publish as fast as the server accepts, ignoring -rate")
	flag.IntVar(&o.publishers, "publishers", 4, "concurrent publishers per room with -saturate")
	flag.IntVar(&o.size, "size", 64, "bytes of padding in each message")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "measured time")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "publishing before the measured time")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "wait after connecting before reading the server's memory")
	flag.IntVar(&o.pid, "pid", 0, "the server's pid, for CPU and memory from /proc (0: not measured)")
	flag.BoolVar(&o.fsyncs, "fsyncs", false, "count the server's fsync and fdatasync calls in the measured time with perf stat (with -pid)")
	flag.IntVar(&o.perSource, "per-source", 20000, "connections per source address (127.0.0.2, .3, ...)")
	flag.StringVar(&o.label, "label", "", "a name for this run in the report")
	flag.IntVar(&o.deleteEvery, "delete-every", 0, "delete every Nth message acknowledged, as its author (with the secret of its submit answer), on the room's next tick in place of a post, and measure how soon streams receive the deletes (0: none)")
	flag.StringVar(&o.receiver, "receiver", "", "base URL of the hooks' receiver (cmd/hookreceiver), for the webhook events and screen calls it got per second")
	summary := flag.Bool("summarize", false, "print the medians of the JSON result files named as arguments, and stop")
	flag.Parse()

	if *summary {
		if err := summarize(flag.Args(), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "chatbench:", err)
			os.Exit(1)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
	res.print(os.Stdout)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// result is what a run measured.
type result struct {
	Label string `json:"label,omitempty"`
	Proto string `json:"proto"`
	// The protocols that the streams (each connection and reconnection)
	// and the posts actually used, and how many of each.
	StreamProtocols  map[string]int64 `json:"stream_protocols"`
	PublishProtocols map[string]int64 `json:"publish_protocols,omitempty"`
	Rooms            int              `json:"rooms"`
	Subscribers      int              `json:"subscribers"`
	Seconds          float64          `json:"seconds"`
	Published        int64            `json:"published"`
	Deliveries       int64            `json:"deliveries"`
	DeliveriesPerSec float64          `json:"deliveries_per_sec"`
	P50Ms            float64          `json:"p50_ms"`
	P99Ms            float64          `json:"p99_ms"`
	MaxMs            float64          `json:"max_ms"`
	Lost             int64            `json:"lost"`
	Duplicates       int64            `json:"duplicates"`
	OutOfOrder       int64            `json:"out_of_order"`
	Reconnects       int64            `json:"reconnects"`
	CPUPerDeliveryUs float64          `json:"cpu_per_delivery_us,omitempty"`
	RSSPerSubKiB     float64          `json:"rss_per_subscriber_kib,omitempty"`
	RSSStartMiB      float64          `json:"rss_start_mib,omitempty"`
	RSSEndMiB        float64          `json:"rss_end_mib,omitempty"`
	// Submits acknowledged with 201 in the measured time, per second, and
	// the time from sending each to reading its answer; the server's CPU
	// time per such submit (deliveries included); with -fsyncs, the server's
	// fsync and fdatasync calls in that time per such submit.
	SubmitsPerSec float64 `json:"submits_per_sec"`
	SubmitP50Ms   float64 `json:"submit_p50_ms"`
	SubmitP99Ms   float64 `json:"submit_p99_ms"`
	// With -delete-every: the deletes acknowledged in the measured time,
	// and the time from sending each to a stream's receiving it.
	Deletes         int64   `json:"deletes,omitempty"`
	DeleteP50Ms     float64 `json:"delete_p50_ms,omitempty"`
	DeleteP99Ms     float64 `json:"delete_p99_ms,omitempty"`
	CPUPerSubmitUs  float64 `json:"cpu_per_submit_us,omitempty"`
	FsyncsPerSubmit float64 `json:"fsyncs_per_submit,omitempty"`
	// With -receiver: the events its webhook batches carried and the
	// screen calls it answered in the measured time, per second.
	WebhookEventsPerSec float64 `json:"webhook_events_per_sec,omitempty"`
	ScreenedPerSec      float64 `json:"screened_per_sec,omitempty"`
}

func (r result) print(w io.Writer) {
	rows := [][2]string{
		{"run", r.Label},
		{"protocol", r.Proto},
		{"streams over", formatCounts(r.StreamProtocols)},
		{"posts over", formatCounts(r.PublishProtocols)},
		{"rooms x subscribers", fmt.Sprintf("%d x %d", r.Rooms, r.Subscribers/max(r.Rooms, 1))},
		{"measured", fmt.Sprintf("%.1fs", r.Seconds)},
		{"published", fmt.Sprint(r.Published)},
		{"submits/s (201)", fmt.Sprintf("%.0f", r.SubmitsPerSec)},
		{"submit latency p50 / p99", fmt.Sprintf("%.2f / %.2f ms", r.SubmitP50Ms, r.SubmitP99Ms)},
		{"server CPU per submit", fmt.Sprintf("%.2f µs", r.CPUPerSubmitUs)},
		{"server fsyncs per submit", fmt.Sprintf("%.3f", r.FsyncsPerSubmit)},
		{"webhook events/s received", fmt.Sprintf("%.0f", r.WebhookEventsPerSec)},
		{"screen calls/s received", fmt.Sprintf("%.0f", r.ScreenedPerSec)},
		{"deliveries/s", fmt.Sprintf("%.0f", r.DeliveriesPerSec)},
		{"latency p50 / p99 / max", fmt.Sprintf("%.2f / %.2f / %.2f ms", r.P50Ms, r.P99Ms, r.MaxMs)},
		{"deletes / latency p50 / p99", fmt.Sprintf("%d / %.2f / %.2f ms", r.Deletes, r.DeleteP50Ms, r.DeleteP99Ms)},
		{"lost / duplicate / out of order", fmt.Sprintf("%d / %d / %d", r.Lost, r.Duplicates, r.OutOfOrder)},
		{"reconnects", fmt.Sprint(r.Reconnects)},
		{"server CPU per delivery", fmt.Sprintf("%.2f µs", r.CPUPerDeliveryUs)},
		{"server RSS per subscriber", fmt.Sprintf("%.1f KiB", r.RSSPerSubKiB)},
		{"server RSS start / end", fmt.Sprintf("%.1f / %.1f MiB", r.RSSStartMiB, r.RSSEndMiB)},
	}
	for _, row := range rows {
		fmt.Fprintf(w, "%-32s %s\n", row[0], row[1])
	}
}

func run(ctx context.Context, o options) (result, error) {
	base, err := url.Parse(strings.TrimSuffix(o.url, "/"))
	if err != nil {
		return result{}, fmt.Errorf("-url: %w", err)
	}
	streamBases := []*url.URL{base}
	if o.subscribeURLs != "" {
		streamBases = nil
		for _, u := range strings.Split(o.subscribeURLs, ",") {
			b, err := url.Parse(strings.TrimSuffix(strings.TrimSpace(u), "/"))
			if err != nil {
				return result{}, fmt.Errorf("-subscribe-urls: %w", err)
			}
			streamBases = append(streamBases, b)
		}
	}
	o.proto = cmp.Or(o.proto, "h1")
	conns, err := newClients(o.proto, base, o.perSource)
	if err != nil {
		return result{}, err
	}
	if o.proto == "quic" && (o.rate != 0 || o.saturate) {
		return result{}, errors.New("-proto quic carries no messages: it wants -rate 0")
	}
	var fsyncs *fsyncCounter
	if o.fsyncs {
		if o.pid == 0 {
			return result{}, errors.New("-fsyncs wants the server's -pid")
		}
		if fsyncs, err = startFsyncCounter(o.pid); err != nil {
			return result{}, err
		}
		defer fsyncs.stop()
	}
	defer conns.close()
	res := result{Label: o.label, Proto: o.proto, Rooms: o.rooms, Subscribers: o.subscribers}
	prefix := fmt.Sprintf("bench-%x", rand.Uint32())
	roomNames := make([]string, o.rooms)
	for i := range roomNames {
		roomNames[i] = fmt.Sprintf("%s-%d", prefix, i)
	}

	var rssBefore int64
	if o.pid != 0 {
		if rssBefore, err = rssKiB(o.pid); err != nil {
			return res, err
		}
	}

	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	subs := make([]*subscriber, o.subscribers)
	protos := new(tally)
	var connected sync.WaitGroup
	var all sync.WaitGroup
	sem := make(chan struct{}, 256) // connect at most this many at once
	for i := range subs {
		// Subscriber i follows room i%rooms; the next subscribers of the
		// same room go to the next server.
		streamBase := streamBases[(i/o.rooms)%len(streamBases)]
		s := &subscriber{opener: conns.subscriber(i, streamBase, roomNames[i%o.rooms]), protos: protos}
		subs[i] = s
		connected.Add(1)
		all.Add(1)
		sem <- struct{}{}
		go func() {
			defer all.Done()
			s.run(subCtx, func() { <-sem; connected.Done() })
		}()
	}
	// A server that refuses the protocol asked for fails every attempt;
	// the run gives up once no subscriber has connected for a while.
	count, progressAt := 0, time.Now()
	progress(ctx, "connecting", subs, nil, func() bool {
		if n := countConnected(subs); n != count {
			count, progressAt = n, time.Now()
		}
		return count == len(subs) || time.Since(progressAt) > connectPatience
	})
	if count < len(subs) {
		stopSubs()
	}
	connected.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if count < len(subs) {
		return res, fmt.Errorf("%d of %d subscribers connected, none for %v; the last failure: %v",
			count, len(subs), connectPatience, lastFailure(subs))
	}
	want := protocols[o.proto]
	if err := protos.only("streams", want); err != nil {
		return res, err
	}
	time.Sleep(o.settle)
	if o.pid != 0 {
		rss, err := rssKiB(o.pid)
		if err != nil {
			return res, err
		}
		res.RSSStartMiB = float64(rssBefore) / 1024
		res.RSSPerSubKiB = float64(rss-rssBefore) / float64(max(o.subscribers, 1))
	}

	pubCtx, stopPubs := context.WithCancel(ctx)
	pub := newPublisher(base.String(), roomNames, o, conns.publisher())
	var pubs sync.WaitGroup
	if o.rate > 0 || o.saturate {
		pub.start(pubCtx, &pubs)
	}
	sleep(ctx, o.warmup)

	if fsyncs != nil {
		if err := fsyncs.command("enable"); err != nil {
			stopPubs()
			pubs.Wait()
			return res, err
		}
	}
	measuring.Store(true)
	startDeliveries := totalReceived(subs)
	startPublished, startDeletes := pub.count.Load(), pub.deletes.Load()
	startHooks, hooksErr := o.receiverCounts(ctx)
	startCPU, _ := cpuTicks(o.pid)
	start := time.Now()
	progress(ctx, "measuring", subs, pub, func() bool { return time.Since(start) >= o.duration })
	elapsed := time.Since(start)
	endCPU, _ := cpuTicks(o.pid)
	endHooks, err := o.receiverCounts(ctx)
	hooksErr = cmp.Or(hooksErr, err)
	res.Deliveries = totalReceived(subs) - startDeliveries
	res.Published = pub.count.Load() - startPublished
	res.Deletes = pub.deletes.Load() - startDeletes
	measuring.Store(false)
	var fsyncCount int64
	var fsyncErr error
	if fsyncs != nil {
		if fsyncErr = fsyncs.command("disable"); fsyncErr == nil {
			fsyncCount, fsyncErr = fsyncs.stop()
		}
	}
	stopPubs()
	pubs.Wait()
	if fsyncErr != nil {
		return res, fsyncErr
	}
	if hooksErr != nil {
		return res, hooksErr
	}
	if n := endHooks.Rejected - startHooks.Rejected; n > 0 {
		return res, fmt.Errorf("the receiver refused %d calls whose signature did not verify", n)
	}
	res.FsyncsPerSubmit = float64(fsyncCount) / float64(max(res.Published, 1))

	// Let every subscriber catch up with what was published.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !caughtUp(subs, pub, roomNames, o.rooms) {
		time.Sleep(50 * time.Millisecond)
	}
	if o.pid != 0 {
		if rss, err := rssKiB(o.pid); err == nil {
			res.RSSEndMiB = float64(rss) / 1024
		}
	}
	stopSubs()
	all.Wait()
	res.StreamProtocols, res.PublishProtocols = protos.counts(), pub.protos.counts()
	if err := protos.only("streams", want); err != nil {
		return res, err
	}
	if err := pub.protos.only("posts", publishProtocol(o.proto)); err != nil {
		return res, err
	}

	res.Seconds = elapsed.Seconds()
	res.DeliveriesPerSec = float64(res.Deliveries) / elapsed.Seconds()
	res.SubmitsPerSec = float64(res.Published) / elapsed.Seconds()
	res.SubmitP50Ms, res.SubmitP99Ms, _ = percentiles(pub.latencies)
	res.WebhookEventsPerSec = float64(endHooks.Events-startHooks.Events) / elapsed.Seconds()
	res.ScreenedPerSec = float64(endHooks.Screened-startHooks.Screened) / elapsed.Seconds()
	if o.pid != 0 && res.Deliveries > 0 {
		res.CPUPerDeliveryUs = float64(endCPU-startCPU) / clockTicks * 1e6 / float64(res.Deliveries)
	}
	if o.pid != 0 && res.Published > 0 {
		res.CPUPerSubmitUs = float64(endCPU-startCPU) / clockTicks * 1e6 / float64(res.Published)
	}
	var latencies, deleteLatencies []uint32
	for i, s := range subs {
		latencies = append(latencies, s.latencies...)
		deleteLatencies = append(deleteLatencies, s.deleteLatencies...)
		res.Duplicates += s.duplicates
		res.OutOfOrder += s.outOfOrder
		res.Reconnects += s.reconnects
		res.Lost += s.gaps
		if last := pub.last(roomNames[i%o.rooms]); last > s.lastSeq.Load() {
			res.Lost += int64(last - s.lastSeq.Load())
		}
	}
	res.P50Ms, res.P99Ms, res.MaxMs = percentiles(latencies)
	res.DeleteP50Ms, res.DeleteP99Ms, _ = percentiles(deleteLatencies)
	return res, nil
}

// percentiles sorts latencies, in microseconds, and returns their median,
// 99th percentile and maximum in milliseconds.
func percentiles(latencies []uint32) (p50, p99, most float64) {
	slices.Sort(latencies)
	n := len(latencies)
	if n == 0 {
		return 0, 0, 0
	}
	return float64(latencies[n/2]) / 1000, float64(latencies[n*99/100]) / 1000, float64(latencies[n-1]) / 1000
}

// connectPatience is how long connecting may go without a new stream.
const connectPatience = 20 * time.Second

// measuring is set during the measured time; latencies are recorded then.
var measuring atomic.Bool

// subscriber follows one room the way EventSource does: on a lost stream it
// reconnects with the last id it received.
type subscriber struct {
	opener opener
	protos *tally

	connected  atomic.Bool
	received   atomic.Int64
	lastSeq    atomic.Uint64
	gaps       int64
	duplicates int64
	outOfOrder int64
	reconnects int64
	latencies  []uint32 // of messages, microseconds
	// of deletes, from the delete's request; microseconds
	deleteLatencies []uint32
	failure         atomic.Pointer[error] // of the last failed attempt
}

func (s *subscriber) run(ctx context.Context, onFirstConnect func()) {
	lastID := ""
	first := true
	for ctx.Err() == nil {
		evs, proto, err := s.opener.open(ctx, lastID)
		if err == nil {
			s.protos.add(proto)
			if first {
				s.connected.Store(true)
				onFirstConnect()
				first = false
			}
			lastID = s.read(evs, lastID)
			evs.close()
		} else {
			s.failure.Store(&err)
		}
		if ctx.Err() != nil {
			break
		}
		s.reconnects++
		sleep(ctx, 100*time.Millisecond)
	}
	if first {
		onFirstConnect()
	}
}

// read consumes one stream and returns the last id seen.
func (s *subscriber) read(evs events, lastID string) string {
	for {
		id, sent, deleted, err := evs.next()
		if err != nil {
			return lastID
		}
		now := time.Now().UnixNano()
		lastID = id
		_, seq, ok := rooms.ParseID(id)
		if !ok {
			continue
		}
		last := s.lastSeq.Load()
		switch {
		case seq == last:
			s.duplicates++
			continue
		case seq < last:
			s.outOfOrder++
			continue
		case seq > last+1:
			s.gaps += int64(seq - last - 1)
		}
		s.lastSeq.Store(seq)
		s.received.Add(1)
		if sent != 0 && now >= sent {
			took := uint32(min((now-sent)/1000, 1<<32-1))
			if deleted {
				s.deleteLatencies = append(s.deleteLatencies, took)
			} else {
				s.latencies = append(s.latencies, took)
			}
		}
	}
}

// sentAt finds the publisher's timestamp in a message's JSON.
func sentAt(data string) (int64, bool) {
	i := strings.Index(data, `"message":"`)
	if i < 0 {
		return 0, false
	}
	return stamp(data[i+len(`"message":"`):])
}

// stamp reads the publisher's timestamp, "t=<unix nanoseconds>;", at the
// start of a message's text.
func stamp(text string) (int64, bool) {
	rest, ok := strings.CutPrefix(text, "t=")
	if !ok {
		return 0, false
	}
	j := strings.IndexByte(rest, ';')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(rest[:j], 10, 64)
	return n, err == nil
}

// deleteTarget finds the id of the message a delete's JSON deletes. Like
// sentAt it scans rather than decodes: each of a room's streams reads every
// event, and a decoder's time on them would count in the delete's latency
// and not in a message's.
func deleteTarget(data string) string {
	_, rest, ok := strings.Cut(data, `"target":"`)
	if !ok {
		return ""
	}
	target, _, _ := strings.Cut(rest, `"`)
	return target
}

// deleteSent holds when each delete was sent, by the id of the message it
// deletes, for the streams that receive it to measure its latency.
var deleteSent sync.Map // string → int64 unix nanoseconds

// deleteSentAt returns when the delete of target was sent, while measuring.
func deleteSentAt(target string) int64 {
	if !measuring.Load() {
		return 0
	}
	sent, _ := deleteSent.Load(target)
	n, _ := sent.(int64)
	return n
}

// publisher posts messages, deletes some with -delete-every, and
// remembers the newest id per room.
type publisher struct {
	url     string // of the chat, where /submit and /rooms are
	rooms   []string
	o       options
	client  *http.Client
	count   atomic.Int64
	deletes atomic.Int64
	protos  tally

	mu        sync.Mutex
	lastSeq   map[string]uint64
	latencies []uint32              // of acknowledged submits in the measured time, µs
	doomed    map[string][]authored // by room: messages to delete at its next tick
}

// authored is a message acknowledged, with the secret that lets its
// author delete it.
type authored struct{ id, secret string }

func newPublisher(url string, roomNames []string, o options, client *http.Client) *publisher {
	return &publisher{url: url, rooms: roomNames, o: o, lastSeq: map[string]uint64{}, doomed: map[string][]authored{}, client: client}
}

func (p *publisher) start(ctx context.Context, wg *sync.WaitGroup) {
	padding := strings.Repeat("x", p.o.size)
	for _, room := range p.rooms {
		if p.o.saturate {
			for range p.o.publishers {
				wg.Go(func() {
					for ctx.Err() == nil {
						p.act(room, padding)
					}
				})
			}
			continue
		}
		wg.Go(func() {
			tick := time.NewTicker(time.Duration(float64(time.Second) / p.o.rate))
			defer tick.Stop()
			// Spread the rooms' ticks over the interval.
			sleep(ctx, time.Duration(rand.Int64N(int64(time.Duration(float64(time.Second)/p.o.rate)))))
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					// Each post goes out on its tick, answered or not, as
					// people post independently: a server slower to answer
					// is not sent fewer messages.
					wg.Go(func() { p.act(room, padding) })
				}
			}
		})
	}
}

// act deletes the message of room waiting for it, if there is one, else
// posts: a delete takes a post's turn, so the load is the same, and it
// reaches the server as a post does, not on the heels of the message it
// deletes.
func (p *publisher) act(room, padding string) {
	p.mu.Lock()
	var next authored
	if q := p.doomed[room]; len(q) > 0 {
		next, p.doomed[room] = q[0], q[1:]
	}
	p.mu.Unlock()
	if next.id != "" {
		p.delete(room, next.id, next.secret)
		return
	}
	p.post(room, padding)
}

func (p *publisher) post(room, padding string) {
	sent := time.Now()
	body := fmt.Sprintf(`{"room":%q,"user":"bench","message":"t=%d;%s"}`, room, sent.UnixNano(), padding)
	resp, err := p.client.Post(p.url+"/submit", "application/json", strings.NewReader(body))
	if err != nil {
		return
	}
	defer resp.Body.Close()
	p.protos.add(resp.Proto)
	var m struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&m) != nil {
		return
	}
	if _, seq, ok := rooms.ParseID(m.ID); ok {
		took := time.Since(sent)
		p.mu.Lock()
		p.lastSeq[room] = max(p.lastSeq[room], seq)
		if measuring.Load() {
			p.latencies = append(p.latencies, uint32(min(took.Microseconds(), 1<<32-1)))
		}
		if n := p.count.Add(1); p.o.deleteEvery > 0 && n%int64(p.o.deleteEvery) == 0 {
			p.doomed[room] = append(p.doomed[room], authored{m.ID, m.Secret})
		}
		p.mu.Unlock()
	}
}

// delete deletes the message id of room as its author.
func (p *publisher) delete(room, id, secret string) {
	req, err := http.NewRequest(http.MethodDelete, p.url+"/rooms/"+room+"/messages/"+id, nil)
	if err != nil {
		return
	}
	req.Header.Set("Chat-Secret", secret)
	deleteSent.Store(id, time.Now().UnixNano())
	resp, err := p.client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var del struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&del) != nil {
		return
	}
	if _, seq, ok := rooms.ParseID(del.ID); ok {
		p.mu.Lock()
		p.lastSeq[room] = max(p.lastSeq[room], seq)
		p.mu.Unlock()
		p.deletes.Add(1)
	}
}

func (p *publisher) last(room string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSeq[room]
}

func countConnected(subs []*subscriber) int {
	n := 0
	for _, s := range subs {
		if s.connected.Load() {
			n++
		}
	}
	return n
}

func lastFailure(subs []*subscriber) error {
	for _, s := range subs {
		if err := s.failure.Load(); err != nil {
			return *err
		}
	}
	return nil
}

func totalReceived(subs []*subscriber) int64 {
	var n int64
	for _, s := range subs {
		n += s.received.Load()
	}
	return n
}

// caughtUp reports whether every subscriber has received the newest message
// of its room.
func caughtUp(subs []*subscriber, p *publisher, roomNames []string, roomCount int) bool {
	for i, s := range subs {
		if s.lastSeq.Load() < p.last(roomNames[i%roomCount]) {
			return false
		}
	}
	return true
}

// progress prints a status line every second until done reports true.
func progress(ctx context.Context, phase string, subs []*subscriber, p *publisher, done func() bool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last, lastAt, lastPrint := totalReceived(subs), time.Now(), time.Now()
	for !done() && ctx.Err() == nil {
		<-tick.C
		if time.Since(lastPrint) < time.Second {
			continue
		}
		now, n := time.Now(), totalReceived(subs)
		published := int64(0)
		if p != nil {
			published = p.count.Load()
		}
		fmt.Fprintf(os.Stderr, "%-10s connected %d/%d  published %d  delivered %d  %.0f/s\n",
			phase, countConnected(subs), len(subs), published, n, float64(n-last)/now.Sub(lastAt).Seconds())
		last, lastAt, lastPrint = n, now, now
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
