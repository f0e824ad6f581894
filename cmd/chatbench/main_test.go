package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSentAt(t *testing.T) {
	tests := []struct {
		data string
		want int64
		ok   bool
	}{
		{`{"id":"e-1","message":"t=1795740000123456789;xxxx","time":"..."}`, 1795740000123456789, true},
		{`{"message":"t=12;"}`, 12, true},
		{`{"message":"hello"}`, 0, false},
		{`{"message":"t=12"}`, 0, false},
		{`{"message":"t=abc;"}`, 0, false},
	}
	for _, tt := range tests {
		got, ok := sentAt(tt.data)
		if got != tt.want || ok != tt.ok {
			t.Errorf("sentAt(%q) = %d, %v; want %d, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

// TestStamp reads the publisher's timestamp from a message's text, as a
// gRPC stream delivers it.
func TestStamp(t *testing.T) {
	tests := []struct {
		text string
		want int64
		ok   bool
	}{
		{"t=1795740000123456789;xxxx", 1795740000123456789, true},
		{"t=12;", 12, true},
		{"hello t=12;", 0, false},
		{"t=12", 0, false},
		{"t=;", 0, false},
	}
	for _, tt := range tests {
		got, ok := stamp(tt.text)
		if got != tt.want || ok != tt.ok {
			t.Errorf("stamp(%q) = %d, %v; want %d, %v", tt.text, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSummarize(t *testing.T) {
	file := filepath.Join(t.TempDir(), "runs.jsonl")
	lines := []string{
		`{"label":"fanout/plugin","deliveries_per_sec":100,"cpu_per_delivery_us":10}`,
		`{"label":"fanout/plugin","deliveries_per_sec":300,"cpu_per_delivery_us":30}`,
		`{"label":"fanout/plugin","deliveries_per_sec":200,"cpu_per_delivery_us":20}`,
		`{"label":"fanout/baseline","deliveries_per_sec":100,"cpu_per_delivery_us":40}`,
		`{"label":"fanout-grpc/plugin","cpu_per_delivery_us":12}`,
		`{"label":"fanout-grpc/baseline","cpu_per_delivery_us":11}`,
		`{"label":"fanout-grpc/sse-h2","cpu_per_delivery_us":10}`,
		`{"label":"fanout-file/file","cpu_per_delivery_us":9}`,
		`{"label":"fanout-file/memory","cpu_per_delivery_us":6}`,
		`{"label":"submit256-webhook/plugin","submits_per_sec":1000,"cpu_per_submit_us":50}`,
		`{"label":"submit256-webhook/webhook","submits_per_sec":900,"cpu_per_submit_us":60,"webhook_events_per_sec":800}`,
		`{"label":"fanout-screen (GODEBUG=x=1)/screen","submit_p50_ms":3,"submit_p99_ms":9}`,
		`{"label":"fanout-screen (GODEBUG=x=1)/plugin","submit_p50_ms":1,"submit_p99_ms":6}`,
		`not json`,
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := summarize([]string{file}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| fanout | deliveries/s | 200.00 | 100.00 | 2.00x | 3/1 |",
		"| fanout | CPU µs/delivery | 20.00 | 40.00 | 0.50x | 3/1 |",
		"| fanout-grpc | CPU µs/delivery | 12.00 | 11.00 | 1.09x | 1/1 |",
		"| fanout-grpc (plugin vs sse-h2) | CPU µs/delivery | 12.00 | 10.00 | 1.20x | 1/1 |",
		"| fanout-file (file vs memory) | CPU µs/delivery | 9.00 | 6.00 | 1.50x | 1/1 |",
		"| submit256-webhook (webhook vs plugin) | CPU µs/submit | 60.00 | 50.00 | 1.20x | 1/1 |",
		"| submit256-webhook (webhook vs plugin) | webhook events/s | 800.00 | 0.00 | - | 1/1 |",
		"| fanout-screen (GODEBUG=x=1) (screen vs plugin) | submit p50 ms | 3.00 | 1.00 | 3.00x | 1/1 |",
		"| fanout-screen (GODEBUG=x=1) (screen vs plugin) | submit p99 ms | 9.00 | 6.00 | 1.50x | 1/1 |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "(plugin vs webhook)") {
		t.Errorf("the plugin without a hook is measured against the one with it:\n%s", out.String())
	}
	if strings.Contains(out.String(), "lost") {
		t.Errorf("a metric that is zero for both is shown:\n%s", out.String())
	}
}

// TestProtocols runs chatbench for a moment over each protocol against the
// built baseline and the built caddy on bench/Caddyfile, and checks what a
// benchmark's reader relies on: every message reached every subscriber, over
// the protocol asked for, each subscriber from its source address, and the
// server's CPU and memory were read.
func TestProtocols(t *testing.T) {
	dir := t.TempDir()
	baseline := build(t, dir, "chatbaseline", "./cmd/chatbaseline")
	caddy := os.Getenv("CHAT_CADDY_BINARY") // CI builds it once for every step
	if caddy == "" {
		caddy = build(t, dir, "caddy", "./cmd/caddy")
	}
	httpPort, httpsPort, admin, home := freePort(t), freePort(t), freePort(t), t.TempDir()
	plugin := start(t, caddy, []string{"run", "--config", "../../bench/Caddyfile"},
		"BENCH_HTTP="+httpPort, "BENCH_HTTPS="+httpsPort, "BENCH_ADMIN="+admin,
		"HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	waitTLS(t, "127.0.0.1:"+httpsPort) // Caddy makes the certificate in the background

	for _, tt := range []struct {
		proto, server string
		flags         []string // the baseline's
	}{
		{"h1", "baseline", nil},
		{"h2", "baseline", nil},
		{"h2", "baseline-xnet", []string{"-xnet"}}, // x/net's HTTP/2, as Caddy's
		{"h3", "baseline", nil},
		{"h1", "plugin", nil},
		{"h2", "plugin", nil},
		{"h3", "plugin", nil},
		{"grpc", "plugin", nil},
		{"grpc", "baseline", nil}, // grpc-go's own server; posts over HTTP/2
		{"quic", "baseline", nil}, // idle connections only
	} {
		t.Run(tt.proto+"/"+tt.server, func(t *testing.T) {
			scheme, port, pid, subscribeURLs := "https", httpsPort, plugin, ""
			if tt.proto == "h1" {
				scheme, port = "http", httpPort
			}
			if tt.server != "plugin" {
				port = freePort(t)
				args := []string{"-addr", "127.0.0.1:" + port, "-proto", tt.proto}
				if tt.proto == "grpc" {
					grpcAddr := "127.0.0.1:" + freePort(t)
					args = []string{"-addr", "127.0.0.1:" + port, "-proto", "h2", "-grpc", grpcAddr}
					subscribeURLs = "https://" + grpcAddr
				}
				pid = start(t, baseline, append(args, tt.flags...))
				switch tt.proto {
				case "h1":
					waitTCP(t, "127.0.0.1:"+port)
				case "quic": // no TCP: chatbench tries again until it listens
				default:
					waitTLS(t, "127.0.0.1:"+port)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rate := 20.0
			if tt.proto == "quic" {
				rate = 0
			}
			res, err := run(ctx, options{
				url: scheme + "://127.0.0.1:" + port, subscribeURLs: subscribeURLs, proto: tt.proto, rooms: 2, subscribers: 6, rate: rate,
				duration: time.Second, warmup: 300 * time.Millisecond, pid: pid, perSource: 2, // sources 127.0.0.2 to .4
			})
			if err != nil {
				t.Fatal(err)
			}
			want := protocols[tt.proto]
			if res.Proto != tt.proto || !maps.Equal(res.StreamProtocols, map[string]int64{want: 6}) {
				t.Errorf("streams: -proto %s over %v; want 6 over %s", res.Proto, res.StreamProtocols, want)
			}
			if res.RSSEndMiB <= 0 {
				t.Errorf("the server's memory was not read")
			}
			if rate == 0 {
				return
			}
			if n := res.PublishProtocols[publishProtocol(tt.proto)]; n == 0 || len(res.PublishProtocols) != 1 {
				t.Errorf("posts over %v, want %s only", res.PublishProtocols, publishProtocol(tt.proto))
			}
			// Every message reached every subscriber of its room when
			// none is lost; deliveries count only the measured time, so
			// the last posts' may fall after it.
			if res.Published == 0 || res.Deliveries == 0 || res.Lost+res.Duplicates+res.OutOfOrder+res.Reconnects != 0 {
				t.Errorf("published %d, delivered %d (3 subscribers per room); lost %d, duplicates %d, out of order %d, reconnects %d",
					res.Published, res.Deliveries, res.Lost, res.Duplicates, res.OutOfOrder, res.Reconnects)
			}
			// CPU time is counted in ticks of 10 ms, too coarse for so short a
			// run to be sure of one.
			if res.P99Ms <= 0 {
				t.Errorf("no latency measured")
			}
		})
	}
}

// TestProtocolsCounted: a run fails if a stream or a post went over another
// protocol than the one asked for.
func TestProtocolsCounted(t *testing.T) {
	tests := []struct {
		used []string
		want string
		err  string
	}{
		{[]string{"HTTP/2.0", "HTTP/2.0"}, "HTTP/2.0", ""},
		{nil, "HTTP/2.0", ""},
		{[]string{"HTTP/2.0", "HTTP/1.1", "HTTP/1.1"}, "HTTP/2.0", "streams went over another protocol than HTTP/2.0: 2 over HTTP/1.1"},
		{[]string{"grpc/"}, "grpc/h2", "streams went over another protocol than grpc/h2: 1 over grpc/"},
	}
	for _, tt := range tests {
		var ta tally
		for _, p := range tt.used {
			ta.add(p)
		}
		err := ta.only("streams", tt.want)
		if got := fmt.Sprint(err); (tt.err == "" && err != nil) || (tt.err != "" && got != tt.err) {
			t.Errorf("%v, want only %s: %v; want %q", tt.used, tt.want, err, tt.err)
		}
	}
}

// build builds the command in pkg, relative to the module's root, into dir.
func build(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// start runs a server until the test ends and returns its pid. A failed
// test shows what the server said.
func start(t *testing.T, bin string, args []string, env ...string) int {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s said:\n%s", filepath.Base(bin), out.String())
		}
	})
	return cmd.Process.Pid
}

// freePort returns a port free now for TCP and UDP alike, where HTTP/3
// listens beside HTTP/2. It is free on every address, as a site such as
// http://:port listens: the benchmarks' clients hold many ports on
// 127.0.0.2 and up.
func freePort(t *testing.T) string {
	t.Helper()
	given.Lock()
	defer given.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if given.ports[port] {
			continue // free again, but one of this test's servers will take it
		}
		if pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			pc.Close()
			given.ports[port] = true
			return strconv.Itoa(port)
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

// given is the ports freePort returned: a port closed again is free to the
// kernel until the server it was drawn for binds it, and two servers of one
// test must not be given the same one.
var given = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	waitUntil(t, addr+" to listen", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func waitTLS(t *testing.T, addr string) {
	t.Helper()
	waitUntil(t, "a certificate on "+addr, func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, insecureTLS())
		if err == nil {
			c.Close()
		}
		return err
	})
}

func waitUntil(t *testing.T, what string, try func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestParseFsyncs(t *testing.T) {
	tests := []struct {
		out  string
		want int64
		err  bool
	}{
		{"12,,syscalls:sys_enter_fsync,1000,100.00,,\n30,,syscalls:sys_enter_fdatasync,1000,100.00,,\n", 42, false},
		{"<not counted>,,syscalls:sys_enter_fsync,0,100.00,,\n5,,syscalls:sys_enter_fdatasync,1000,100.00,,\n", 5, false},
		{"5,,syscalls:sys_enter_fdatasync,1000,100.00,,\n", 0, true},
		{"<not supported>,,syscalls:sys_enter_fsync,0,100.00,,\n5,,syscalls:sys_enter_fdatasync,1000,100.00,,\n", 0, true},
		{"event syntax error: 'syscalls:sys_enter_fsync'\n", 0, true},
	}
	for _, tt := range tests {
		got, err := parseFsyncs(tt.out)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseFsyncs(%q) = %d, %v; want %d, error %v", tt.out, got, err, tt.want, tt.err)
		}
	}
}

// TestStoreFsyncs runs saturating submits against the built caddy on
// bench/Caddyfile with the file store and with the memory store, as
// bench/run.sh's -file scenarios do, and checks what the benchmark reports:
// acknowledged submits per second and their latency, and fsyncs per submit
// that the file store makes (bbolt's two per commit at most) and the
// memory store does not.
func TestStoreFsyncs(t *testing.T) {
	dir := t.TempDir()
	caddy := os.Getenv("CHAT_CADDY_BINARY")
	if caddy == "" {
		caddy = build(t, dir, "caddy", "./cmd/caddy")
	}
	for _, tt := range []struct {
		store     string
		min, most float64
	}{
		{"file " + filepath.Join(dir, "history.db"), 0.001, 2},
		{"memory", 0, 0},
	} {
		t.Run(strings.Fields(tt.store)[0], func(t *testing.T) {
			httpPort, home := freePort(t), t.TempDir()
			pid := start(t, caddy, []string{"run", "--config", "../../bench/Caddyfile"},
				"BENCH_HTTP="+httpPort, "BENCH_HTTPS="+freePort(t), "BENCH_ADMIN="+freePort(t), "BENCH_STORE="+tt.store,
				"HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
			waitTCP(t, "127.0.0.1:"+httpPort)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := run(ctx, options{
				url: "http://127.0.0.1:" + httpPort, proto: "h1", rooms: 1, subscribers: 0, saturate: true, publishers: 4,
				duration: time.Second, warmup: 300 * time.Millisecond, pid: pid, fsyncs: true, perSource: 100,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Published == 0 || res.SubmitsPerSec <= 0 || res.SubmitP99Ms <= 0 || res.SubmitP99Ms < res.SubmitP50Ms {
				t.Errorf("published %d, %.0f submits/s, latency p50 %.2f ms, p99 %.2f ms",
					res.Published, res.SubmitsPerSec, res.SubmitP50Ms, res.SubmitP99Ms)
			}
			if res.FsyncsPerSubmit < tt.min || res.FsyncsPerSubmit > tt.most {
				t.Errorf("%.3f fsyncs per submit, want %.3f to %.3f", res.FsyncsPerSubmit, tt.min, tt.most)
			}
		})
	}
}

// TestDeleteTarget finds the message a delete event deletes, as a stream
// delivers it.
func TestDeleteTarget(t *testing.T) {
	tests := []struct{ data, want string }{
		{`{"id":"e-9","target":"e-4","by":"author","time":"2026-12-07T14:00:00.000Z"}`, "e-4"},
		{`{"id":"e-9","target":"","by":"author"}`, ""},
		{`{"id":"e-9","by":"author"}`, ""},
	}
	for _, tt := range tests {
		if got := deleteTarget(tt.data); got != tt.want {
			t.Errorf("deleteTarget(%q) = %q; want %q", tt.data, got, tt.want)
		}
	}
}
