// Package redistest runs redis-servers of a test's own, on free ports,
// never the system one: a single server, a cluster, or a master with a
// Sentinel.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server in its own directory.
type Server struct {
	// Addr is host:port.
	Addr string
	dir  string
	conf string   // the config file, "" for none
	args []string // after the port, bind and directory
	cmd  *exec.Cmd
}

// Start starts a redis-server that appends every write to a file, synced
// before it answers, so that a restart, even after a kill, keeps
// everything it acknowledged. It stops when the test ends. A machine
// without redis-server fails the test rather than skipping it: CI
// installs it (.ci/run).
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
}

// start starts a redis-server with args on a free port.
func start(t testing.TB, args ...string) *Server {
	t.Helper()
	return startConf(t, "", args...)
}

// startConf starts a redis-server with the config file conf, unless it is
// "", and args on a free port.
func startConf(t testing.TB, conf string, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed for this test (apt-get install -y redis-server): %v", err)
	}
	s := &Server{Addr: "127.0.0.1:" + freePort(t), dir: t.TempDir(), conf: conf, args: args}
	s.Restart(t)
	t.Cleanup(s.Stop)
	return s
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// URL is the server's address for store redis.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Restart starts the server again after Stop, on the same port and
// directory, and waits until it accepts connections.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	var args []string
	if s.conf != "" {
		// The config file comes first on the command line.
		args = append(args, s.conf)
	}
	args = append(args, "--port", port, "--bind", "127.0.0.1", "--dir", s.dir)
	s.cmd = exec.Command("redis-server", append(args, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	// A loaded machine, or a server loading its append-only file, may
	// take a while.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %s: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pause stops the server with SIGSTOP: it keeps accepting connections,
// which the kernel completes, and answers nothing, as a Redis that hangs.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("pausing redis-server: %v", err)
	}
}

// Resume continues the server after Pause.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("resuming redis-server: %v", err)
	}
}

// Stop kills the server, as a crash or a network cut would end it.
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// waitFor polls ok every 50 ms until it holds, failing the test after
// 20 s.
func waitFor(t testing.TB, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartCluster starts a Redis Cluster of n masters, no replicas, with the
// hash slots split evenly between them, and waits until every node
// reports the cluster ok.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	nodes := make([]*Server, n)
	clients := make([]*redis.Client, n)
	buses := make([]string, n)
	for i := range nodes {
		// The cluster bus port defaults to the port + 10000, which
		// may be taken or past 65535: name a free one.
		buses[i] = freePort(t)
		nodes[i] = start(t, "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-port", buses[i],
			// Gossip that often forms the cluster in about two seconds rather
			// than five, and still leaves a loaded machine time to answer.
			"--cluster-node-timeout", "2000")
		clients[i] = redis.NewClient(&redis.Options{Addr: nodes[i].Addr})
		defer clients[i].Close()
	}
	ctx := context.Background()
	const slots = 16384
	for i, c := range clients {
		first, last := i*slots/n, (i+1)*slots/n-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			t.Fatalf("assigning slots %d-%d to %s: %v", first, last, nodes[i].Addr, err)
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(nodes[i].Addr)
			if err := clients[0].Do(ctx, "CLUSTER", "MEET", host, port, buses[i]).Err(); err != nil {
				t.Fatalf("introducing %s to the cluster: %v", nodes[i].Addr, err)
			}
		}
	}
	for i, c := range clients {
		waitFor(t, "cluster_state:ok on "+nodes[i].Addr, func() error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)) {
				return fmt.Errorf("cluster info:\n%s", info)
			}
			return nil
		})
	}
	return nodes
}

// Sentinel is a redis-server in Sentinel mode that monitors a master of its
// own.
type Sentinel struct {
	*Server
	// Master is the monitored server; MasterName its name in the
	// Sentinel.
	Master     *Server
	MasterName string
}

// StartSentinel starts a master and a Sentinel that monitors it as
// "mymaster", and waits until the Sentinel names the master.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	master := Start(t)
	host, port, _ := net.SplitHostPort(master.Addr)
	// Sentinel rewrites its config file: it lives in a directory of the
	// test's.
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "sentinel monitor mymaster %s %s 1\n", host, port), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Sentinel{Server: startConf(t, conf, "--sentinel"), Master: master, MasterName: "mymaster"}
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	waitFor(t, "the Sentinel to name its master", func() error {
		addr, err := c.GetMasterAddrByName(context.Background(), s.MasterName).Result()
		if err != nil {
			return err
		}
		if got := net.JoinHostPort(addr[0], addr[1]); got != master.Addr {
			return fmt.Errorf("the Sentinel names %s, want %s", got, master.Addr)
		}
		return nil
	})
	return s
}
