package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Proxy forwards TCP connections to a redis-server, standing for the
// network between one node and Redis: it can cut the node off, lose the
// reply to a script call after Redis ran it, lead to another server, as a
// failover does, or hold what it forwards for a while, as a distant
// server's network does.
type Proxy struct {
	// Addr is the host:port the node connects to.
	Addr string
	l    net.Listener
	done sync.WaitGroup

	mu         sync.Mutex
	target     string
	cut        bool
	dropScript bool
	delay      time.Duration
	conns      map[*proxied]struct{}
}

// proxied is one connection through a Proxy: the node's end and Redis's.
type proxied struct {
	node, redis net.Conn
	// dropping is set once the request whose reply is lost went out:
	// what Redis answers next ends the connection instead.
	mu       sync.Mutex
	dropping bool
}

func (c *proxied) close() {
	c.node.Close()
	c.redis.Close()
}

// StartProxy starts a Proxy to target, which stops when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), l: l, target: target, conns: map[*proxied]struct{}{}}
	p.done.Go(p.accept)
	t.Cleanup(func() {
		l.Close()
		p.closeAll()
		p.done.Wait()
	})
	return p
}

func (p *Proxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.done.Go(func() { p.serve(c) })
	}
}

// serve forwards one connection until either end closes it.
func (p *Proxy) serve(node net.Conn) {
	p.mu.Lock()
	target, cut := p.target, p.cut
	p.mu.Unlock()
	if cut {
		node.Close()
		return
	}
	r, err := net.Dial("tcp", target)
	if err != nil {
		node.Close()
		return
	}
	c := &proxied{node: node, redis: r}
	p.mu.Lock()
	if p.cut || p.target != target {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	// Closed first, so that the replies' goroutine ends before it is
	// waited for.
	var replies sync.WaitGroup
	defer replies.Wait()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.close()
	}()
	replies.Go(func() {
		defer c.close()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			c.mu.Lock()
			dropping := c.dropping
			c.mu.Unlock()
			if err != nil || dropping {
				return
			}
			p.wait()
			if _, err := node.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	buf := make([]byte, 32<<10)
	for {
		n, err := node.Read(buf)
		if err != nil {
			return
		}
		if isScript(buf[:n]) && p.takeDrop() {
			c.mu.Lock()
			c.dropping = true
			c.mu.Unlock()
		}
		p.wait()
		if _, err := r.Write(buf[:n]); err != nil {
			return
		}
	}
}

// isScript reports whether req holds a script call as go-redis sends it.
func isScript(req []byte) bool {
	req = bytes.ToLower(req)
	return bytes.Contains(req, []byte("\r\nevalsha\r\n")) || bytes.Contains(req, []byte("\r\neval\r\n"))
}

func (p *Proxy) takeDrop() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	drop := p.dropScript
	p.dropScript = false
	return drop
}

// DropScriptReply loses the reply to the next script call: the call
// reaches Redis, which runs it, and its connection closes before the
// answer comes back, as when a network drops it.
func (p *Proxy) DropScriptReply() {
	p.mu.Lock()
	p.dropScript = true
	p.mu.Unlock()
}

// Delay holds what goes through each way for d before forwarding it: a
// round trip to Redis takes 2d more. 0 forwards at once again.
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// wait holds a read for the delay before it is forwarded. A connection
// carries one request at a time from a go-redis pool, so holding its
// reads is the latency of a distant server.
func (p *Proxy) wait() {
	p.mu.Lock()
	d := p.delay
	p.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

// Cut closes every connection and refuses new ones until Heal: the node is
// cut off from Redis.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
	p.closeAll()
}

// Heal lets connections through again after Cut.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// MoveTo leads every new connection to target and closes the open ones, as
// a failover to another server does.
func (p *Proxy) MoveTo(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
	p.closeAll()
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.close()
	}
}

// StartReplica starts a replica of master and waits until it holds every
// write master had acknowledged when it was started. It stops when the test
// ends.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	ctx := context.Background()
	m := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer m.Close()
	// A master waits 5 s by default for more replicas to sync with them
	// at once.
	if err := m.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("setting up %s for a replica: %v", master.Addr, err)
	}
	host, port, _ := net.SplitHostPort(master.Addr)
	replica := start(t, "--save", "", "--appendonly", "no", "--replicaof", host, port)
	r := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer r.Close()
	waitFor(t, "the replica to catch up", func() error {
		want, err := replOffset(ctx, m, "master_repl_offset")
		if err != nil {
			return err
		}
		info, err := r.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return errors.New("the replica's link to its master is down")
		}
		got, err := replOffset(ctx, r, "slave_repl_offset")
		if err != nil {
			return err
		}
		if got < want {
			return fmt.Errorf("replica at offset %d, master at %d", got, want)
		}
		return nil
	})
	return replica
}

// replOffset reads a replication offset from INFO replication.
func replOffset(ctx context.Context, c *redis.Client, field string) (int64, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var n int64
			_, err := fmt.Sscan(v, &n)
			return n, err
		}
	}
	return 0, fmt.Errorf("no %s in INFO replication", field)
}

// Detach makes a replica a master of its own: it keeps what it holds and
// takes no more from its old master, as a replica promoted by a failover.
func (s *Server) Detach(t testing.TB) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.Do(context.Background(), "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatalf("promoting the replica %s: %v", s.Addr, err)
	}
}
