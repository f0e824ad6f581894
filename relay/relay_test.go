package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// queue is a Source fed by the test.
type queue struct {
	mu     sync.Mutex
	frames [][]byte
	err    error
	wake   func()
}

func (q *queue) push(frame string) {
	q.mu.Lock()
	q.frames = append(q.frames, []byte(frame))
	q.mu.Unlock()
	q.wake()
}

func (q *queue) stop(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
	q.wake()
}

func (q *queue) Take(dst [][]byte) ([][]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst, q.frames...)
	q.frames = nil
	return dst, q.err
}

// pair returns both ends of a real TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

// relayed attaches a queue to a new stream over a real connection.
func relayed(t *testing.T, p *Pool) (*queue, *bufio.Reader, chan struct{}) {
	server, client := pair(t)
	s := p.NewStream()
	q := &queue{wake: s.Wake}
	ended := make(chan struct{})
	s.Attach(server, q, func() { close(ended) })
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	return q, bufio.NewReader(client), ended
}

func newPool(t *testing.T, cfg Config) *Pool {
	p := New(cfg)
	t.Cleanup(p.Close)
	return p
}

func readN(t *testing.T, r *bufio.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(buf)
}

func TestFramesInOrder(t *testing.T) {
	p := newPool(t, Config{Writers: 2, WriteTimeout: time.Second, QuickWrite: 10 * time.Millisecond})
	q, r, _ := relayed(t, p)
	var want strings.Builder
	for i := range 1000 {
		frame := fmt.Sprintf("data: %d\n\n", i)
		want.WriteString(frame)
		q.push(frame)
	}
	if got := readN(t, r, want.Len()); got != want.String() {
		t.Error("frames arrived out of order or torn")
	}
}

func TestWakeBeforeAttachIsKept(t *testing.T) {
	p := newPool(t, Config{Writers: 1, WriteTimeout: time.Second, QuickWrite: 10 * time.Millisecond})
	server, client := pair(t)
	s := p.NewStream()
	q := &queue{wake: s.Wake}
	q.push("early\n")
	s.Attach(server, q, nil)
	if got := readN(t, bufio.NewReader(client), 6); got != "early\n" {
		t.Errorf("got %q", got)
	}
}

func TestSourceEndClosesStream(t *testing.T) {
	p := newPool(t, Config{Writers: 1, WriteTimeout: time.Second, QuickWrite: 10 * time.Millisecond})
	q, r, ended := relayed(t, p)
	q.push("last\n")
	q.stop(errors.New("room closed"))
	if got, err := io.ReadAll(r); string(got) != "last\n" || err != nil {
		t.Errorf("read %q, %v; want the last frame, then EOF", got, err)
	}
	<-ended
	if p.Len() != 0 {
		t.Errorf("%d streams left", p.Len())
	}
}

func TestClientLeaving(t *testing.T) {
	p := newPool(t, Config{Writers: 1, WriteTimeout: time.Second, QuickWrite: 10 * time.Millisecond})
	server, client := pair(t)
	s := p.NewStream()
	ended := make(chan struct{})
	s.Attach(server, &queue{wake: s.Wake}, func() { close(ended) })
	client.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end when its client left")
	}
}

func TestHeartbeat(t *testing.T) {
	p := newPool(t, Config{Writers: 1, Heartbeat: 20 * time.Millisecond, WriteTimeout: time.Second, QuickWrite: 10 * time.Millisecond})
	_, r, _ := relayed(t, p)
	if got := readN(t, r, 2*len(heartbeatFrame)); got != strings.Repeat(string(heartbeatFrame), 2) {
		t.Errorf("got %q, want two heartbeats", got)
	}
}

// TestSlowClientHoldsNobody: one client that reads nothing does not delay
// another, and is closed once its write times out.
func TestSlowClientHoldsNobody(t *testing.T) {
	p := newPool(t, Config{Writers: 1, WriteTimeout: 300 * time.Millisecond, QuickWrite: 5 * time.Millisecond})
	slow, _, slowEnded := relayed(t, p)
	fast, r, _ := relayed(t, p)
	big := strings.Repeat("x", 64<<10)
	for range 200 { // far more than the socket buffers hold
		slow.push(big)
	}
	start := time.Now()
	fast.push("hello\n")
	if got := readN(t, r, 6); got != "hello\n" {
		t.Fatalf("got %q", got)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("the fast client waited %v behind the slow one", d)
	}
	select {
	case <-slowEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow client was never closed")
	}
}

func TestCloseEndsEverything(t *testing.T) {
	p := New(Config{Writers: 2, Heartbeat: time.Hour, WriteTimeout: time.Second, QuickWrite: 10 * time.Millisecond})
	var readers []*bufio.Reader
	var ends []chan struct{}
	for range 20 {
		_, r, ended := relayed(t, p)
		readers = append(readers, r)
		ends = append(ends, ended)
	}
	p.Close()
	for i, r := range readers {
		if _, err := r.ReadByte(); err != io.EOF {
			t.Errorf("stream %d: %v after Close, want EOF", i, err)
		}
		<-ends[i]
	}
	server, client := pair(t)
	s := p.NewStream()
	s.Attach(server, &queue{wake: s.Wake}, nil)
	if _, err := bufio.NewReader(client).ReadByte(); err != io.EOF {
		t.Errorf("a stream attached after Close: %v, want EOF", err)
	}
}
