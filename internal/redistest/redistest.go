// Package redistest runs a redis-server of a test's own, on a free port,
// never the system one.
package redistest

import (
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server that appends every write to a file in its own
// directory, synced before it answers, so that a restart, even after a
// kill, keeps everything it acknowledged.
type Server struct {
	// Addr is host:port.
	Addr string
	dir  string
	cmd  *exec.Cmd
}

// Start starts a redis-server and stops it when the test ends. A machine
// without redis-server fails the test rather than skipping it: CI installs
// it (.ci/run).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed for this test (apt-get install -y redis-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: l.Addr().String(), dir: t.TempDir()}
	l.Close()
	s.Restart(t)
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's address for store redis.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Restart starts the server again after Stop, on the same port and
// directory, and waits until it accepts connections.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", s.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
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
