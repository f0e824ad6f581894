package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/rooms/storetest"
)

// TestContract holds the Redis store to the contract of every store, on one
// server and on a Redis Cluster of three masters. Each data set is a key
// prefix of its own; each node reaches Redis through proxies of its own,
// so that the suite can cut it off, lose a reply, or fail it over.
func TestContract(t *testing.T) {
	t.Run("Single", func(t *testing.T) {
		srv := redistest.Start(t)
		storetest.Run(t, func(*testing.T) storetest.Backend {
			return newDataSet([]*redistest.Server{srv}).backend()
		})
	})
	t.Run("Cluster", func(t *testing.T) {
		nodes := redistest.StartCluster(t, 3)
		storetest.Run(t, func(*testing.T) storetest.Backend {
			return newDataSet(nodes).backend()
		})
	})
}

// dataSets numbers the data sets, for their prefixes.
var dataSets atomic.Int64

// dataSet is one prefix on a Redis server or cluster, and the proxies of
// the nodes opened on it.
type dataSet struct {
	prefix  string
	servers []*redistest.Server

	mu      sync.Mutex
	proxies []*redistest.Proxy
	// movedTo leads the proxies of a failed-over single server, "" until
	// then.
	movedTo string
}

func newDataSet(servers []*redistest.Server) *dataSet {
	return &dataSet{prefix: fmt.Sprintf("contract%d:", dataSets.Add(1)), servers: servers}
}

func (d *dataSet) backend() storetest.Backend {
	b := storetest.Backend{Open: d.open, Durable: true, Shared: true}
	if len(d.servers) == 1 {
		// The test cluster has no replicas to fail over to.
		b.Failover = d.failover
	}
	return b
}

// open starts a node's proxies, one per server, and a Store on a client
// set as module.go sets it: no retries, deadlines from the context.
func (d *dataSet) open(t *testing.T) storetest.Node {
	byAddr := map[string]*redistest.Proxy{}
	d.mu.Lock()
	for _, s := range d.servers {
		target := s.Addr
		if d.movedTo != "" {
			target = d.movedTo
		}
		p := redistest.StartProxy(t, target)
		byAddr[s.Addr] = p
		d.proxies = append(d.proxies, p)
	}
	d.mu.Unlock()
	const timeout = 2 * time.Second
	var client redis.UniversalClient
	if len(d.servers) == 1 {
		client = redis.NewClient(&redis.Options{Addr: byAddr[d.servers[0].Addr].Addr, MaxRetries: -1, ContextTimeoutEnabled: true,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout})
	} else {
		var addrs []string
		for _, s := range d.servers {
			addrs = append(addrs, s.Addr)
		}
		var dialer net.Dialer
		client = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, IsClusterMode: true, MaxRetries: -1, ContextTimeoutEnabled: true,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if p := byAddr[addr]; p != nil {
					addr = p.Addr
				}
				return dialer.DialContext(ctx, network, addr)
			}})
	}
	s := New(client, Options{Prefix: d.prefix})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.WaitBans(ctx); err != nil {
		t.Fatalf("starting a node: %v", err)
	}
	return storetest.Node{
		Store: s,
		Close: s.Close,
		Cut: func(*testing.T) func() {
			for _, p := range byAddr {
				p.Cut()
			}
			return func() {
				for _, p := range byAddr {
					p.Heal()
				}
			}
		},
		Dump: func(t *testing.T) []byte { return d.dump(t, client) },
		DropReply: func(t *testing.T, room string) {
			addr := d.servers[0].Addr
			if c, ok := client.(*redis.ClusterClient); ok {
				master, err := c.MasterForKey(context.Background(), s.keysOf(room).meta)
				if err != nil {
					t.Fatalf("finding the master of room %s: %v", room, err)
				}
				addr = master.Options().Addr
			}
			byAddr[addr].DropScriptReply()
		},
	}
}

// failover starts a replica of the server, waits until it holds what the
// server holds, and detaches it: promote leads every node to it.
func (d *dataSet) failover(t *testing.T) func(*testing.T) {
	replica := redistest.StartReplica(t, d.servers[0])
	replica.Detach(t)
	return func(*testing.T) {
		d.mu.Lock()
		d.movedTo = replica.Addr
		proxies := d.proxies
		d.mu.Unlock()
		for _, p := range proxies {
			p.MoveTo(replica.Addr)
		}
	}
}

// dump returns every key of the data set as Redis holds it: its
// serialised value (DUMP) and, readable, its content, so that a text
// stored in any key shows whether or not DUMP compresses it.
func (d *dataSet) dump(t *testing.T, client redis.UniversalClient) []byte {
	ctx := context.Background()
	var out []byte
	var mu sync.Mutex
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, d.prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			dumped, err := c.Dump(ctx, key).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			content, err := readable(ctx, c, key)
			if err != nil {
				return err
			}
			mu.Lock()
			out = append(append(append(out, key...), dumped...), content...)
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	}
	if err != nil {
		t.Fatalf("dumping the data set: %v", err)
	}
	return out
}

// readable returns the content of key as text, whatever its type.
func readable(ctx context.Context, c *redis.Client, key string) (string, error) {
	typ, err := c.Type(ctx, key).Result()
	if err != nil {
		return "", err
	}
	var v any
	switch typ {
	case "string":
		v, err = c.Get(ctx, key).Result()
	case "hash":
		v, err = c.HGetAll(ctx, key).Result()
	case "stream":
		v, err = c.XRange(ctx, key, "-", "+").Result()
	}
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return fmt.Sprint(v), err
}
