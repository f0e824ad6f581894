package chat

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// The tests in this file run the caddy binary built from cmd/caddy, as a user
// would: the one CHAT_CADDY_BINARY names (CI builds it once for every step),
// else one built into the run's directory, which TestMain removes.
var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the caddy binary")
	}
	buildOnce.Do(func() {
		if binary = os.Getenv("CHAT_CADDY_BINARY"); binary != "" {
			return
		}
		binary = filepath.Join(testRun.dir, "bin", "caddy")
		out, err := exec.Command("go", "build", "-o", binary, "./cmd/caddy").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func caddyCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(caddyBinary(t), args...).CombinedOutput()
	return string(out), err
}

func TestCLIListModules(t *testing.T) {
	out, err := caddyCmd(t, "list-modules")
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, module := range []string{"chat", "http.handlers.chat"} {
		if !strings.Contains("\n"+out, "\n"+module+"\n") {
			t.Errorf("list-modules does not show %s", module)
		}
	}
}

func TestCLIAdaptExample(t *testing.T) {
	out, err := caddyCmd(t, "adapt", "--config", "Caddyfile.example")
	if err != nil || !strings.Contains(out, `"handler":"chat"`) || !strings.Contains(out, `"chat":{`) {
		t.Errorf("caddy adapt Caddyfile.example: %v\n%s", err, out)
	}
}

// TestCLIValidate: caddy validate accepts the example and refuses bad configs
// with an error that names the problem.
func TestCLIValidate(t *testing.T) {
	if out, err := caddyCmd(t, "validate", "--config", "Caddyfile.example"); err != nil {
		t.Fatalf("the example does not validate: %v\n%s", err, out)
	}
	tests := []struct {
		name, global, directive, wantErr string
	}{
		{"unknown subdirective", "", "shout on", `unknown chat subdirective "shout"`},
		{"unknown option", "colour red", "", `unknown chat option "colour"`},
		{"negative size", "", "max_message_size -1KiB", `max_message_size: want a positive size`},
		{"malformed size", "", "max_message_size 4KB/s", `max_message_size: want a positive size`},
		{"negative duration", "heartbeat -5s", "", `heartbeat: want a duration`},
		{"malformed duration", "idle_timeout forever", "", `idle_timeout: want a duration`},
		{"invalid room name", "", "rooms lobby .secret", `rooms: ".secret": invalid room name`},
		{"body smaller than message", "", "max_message_size 8KiB\n max_body_size 1KiB", `max_body_size (1024) must be at least max_message_size (8192)`},
		{"moderate without identity", "", "moderate", `moderate needs an identity placeholder`},
		{"screen without a secret", "", "screen https://example.com/screen", `screen: a secret is required`},
		{"screen signed with a password", "", "screen https://example.com/screen {\n secret hunter2\n }", `secret must be whsec_ followed by base64`},
		{"screen on_error unknown", "", "screen https://example.com/screen {\n secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n on_error maybe\n }", `screen on_error: want refuse or allow, got "maybe"`},
		{"screen not over HTTP", "", "screen ftp://example.com/screen {\n secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n }", `screen: want an http:// or https:// URL`},
		{"webhook without a secret", "webhook https://example.com/events", "", `webhook: a secret is required`},
		{"webhook of an unknown event", "", "webhook https://example.com/events {\n secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n events message typing\n }", `webhook events: unknown event "typing"`},
		{"webhook batch too large", "webhook https://example.com/events {\n secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n batch 5000 1s\n }", "", `webhook batch: want 1 to 1000 events, got "5000"`},
		{"webhook batch wait too long", "webhook https://example.com/events {\n secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n batch 10 1h\n }", "", `batch wait 1h0m0s: want at most 1m0s`},
		{"webhook not over HTTP", "webhook ftp://example.com/events {\n secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n }", "", `want an http:// or https:// URL`},
		{"webhook signed with a password", "", "webhook https://example.com/events {\n secret hunter2\n }", `secret must be whsec_ followed by base64`},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			cfg := fmt.Sprintf("{\n\tchat {\n\t\t%s\n\t}\n}\n:0 {\n\tchat {\n\t\t%s\n\t}\n}\n", tt.global, tt.directive)
			if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := caddyCmd(t, "validate", "--config", file, "--adapter", "caddyfile")
			if err == nil {
				t.Fatalf("caddy validate accepted:\n%s", cfg)
			}
			if !strings.Contains(strings.ReplaceAll(out, `\"`, `"`), tt.wantErr) {
				t.Errorf("caddy validate said:\n%s\nwant it to say %q", out, tt.wantErr)
			}
		})
	}
}

// TestCLIValidateJSON: limits that the Caddyfile parser would have caught
// are refused in JSON too.
func TestCLIValidateJSON(t *testing.T) {
	file := filepath.Join(t.TempDir(), "caddy.json")
	cfg := `{"apps":{"chat":{"buffer":-1,"idle_timeout":-5},"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[{"handler":"chat","rate_limit":{"posts":0,"window":0}}]}]}}}}}`
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := caddyCmd(t, "validate", "--config", file)
	if err == nil {
		t.Fatal("caddy validate accepted negative limits")
	}
	for _, want := range []string{"buffer must not be negative", "idle_timeout must not be negative"} {
		if !strings.Contains(out, want) {
			t.Errorf("caddy validate said:\n%s\nwant it to say %q", out, want)
		}
	}
}

// TestCLIStopWithOpenStreams: caddy stop returns quickly with 1,000 streams
// open, and every stream ends, although Caddy's default grace period is
// eternal.
func TestCLIStopWithOpenStreams(t *testing.T) {
	const streams = 1000
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	// One client opens them all: raise its stream limit above them.
	cfg := fmt.Sprintf("{\n\tadmin %s\n}\n%s {\n\tchat {\n\t\tmax_streams_per_client %d\n\t}\n}\n", admin, site, streams)
	exited := runBinary(t, t.TempDir(), cfg, site)

	transport := &http.Transport{MaxIdleConnsPerHost: -1}
	defer transport.CloseIdleConnections()
	streamClient := &http.Client{Transport: transport}
	// Cancelling ends every stream still open, so that no read outlives
	// the test, whatever Caddy does.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var opened, ended sync.WaitGroup
	for i := range streams {
		opened.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/stream/room%d", site, i%10), nil)
			resp, err := streamClient.Do(req)
			if err != nil {
				opened.Done()
				t.Errorf("stream %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				opened.Done()
				t.Errorf("stream %d: %s", i, resp.Status)
				return
			}
			r := bufio.NewReader(resp.Body)
			_, err = r.ReadString('\n') // the retry line: the stream is open
			opened.Done()
			for err == nil {
				_, err = r.ReadString('\n')
			}
		}()
	}
	if !waitGroup(&opened, 2*wait) {
		t.Fatal("streams did not open in time")
	}
	if t.Failed() {
		t.FailNow()
	}

	start := time.Now()
	out, err := exec.Command(caddyBinary(t), "stop", "--address", admin).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("caddy stop: %v\n%s", err, out)
	}
	t.Logf("caddy stop with %d open streams took %v", streams, took)
	if took > 2*time.Second {
		t.Errorf("caddy stop took %v with %d streams open, want under 2s", took, streams)
	}
	if !waitGroup(&ended, wait) {
		t.Error("streams still open after caddy stop")
	}
	select {
	case <-exited:
	case <-time.After(wait):
		t.Error("caddy did not exit")
	}
}

// runBinary runs `caddy run` on the Caddyfile cfg with its home and XDG
// directories in dir, waits until site answers, and returns a channel that
// receives caddy's exit. The test kills caddy if it still runs at the end.
func runBinary(t *testing.T, dir, cfg, site string) <-chan error {
	t.Helper()
	_, exited := startBinary(t, dir, cfg, site)
	return exited
}

// startBinary is runBinary that also returns the caddy process, for a test
// that kills it.
func startBinary(t *testing.T, dir, cfg, site string) (*os.Process, <-chan error) {
	t.Helper()
	process, exited := launchBinary(t, dir, cfg)
	waitFor(t, "caddy to listen", func() bool {
		resp, err := client.Get(site + "/rooms")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return process, exited
}

// launchBinary starts the caddy binary on the Caddyfile cfg, with dir as its
// home, without waiting for it to listen. The test's end kills it; the
// channel receives how it exited.
func launchBinary(t *testing.T, dir, cfg string) (*os.Process, <-chan error) {
	t.Helper()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	server := exec.Command(caddyBinary(t), "run", "--config", file, "--adapter", "caddyfile")
	server.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- server.Wait() }()
	t.Cleanup(func() { _ = server.Process.Kill() })
	return server.Process, exited
}

// TestCLIRestartNewEpoch: history lives in memory, so a restarted caddy
// starts every room afresh with a new epoch, and a client resuming with an
// id from before the restart gets a reset naming the new epoch's oldest
// message, then that message.
func TestCLIRestartNewEpoch(t *testing.T) {
	dir := t.TempDir()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	cfg := fmt.Sprintf("{\n\tadmin %s\n}\n%s {\n\tchat\n}\n", admin, site)
	room := roomFor(t, "a")

	exited := runBinary(t, dir, cfg, site)
	old := postJSON(t, site, room, "alice", "before the restart")
	stopBinary(t, admin, exited)

	runBinary(t, dir, cfg, site)
	fresh := postJSON(t, site, room, "alice", "after the restart")
	oldEpoch, _, _ := rooms.ParseID(old.ID)
	if epoch, seq, _ := rooms.ParseID(fresh.ID); epoch == oldEpoch || seq != 1 {
		t.Errorf("first id after the restart %q, want a new epoch (not %q) from sequence 1", fresh.ID, oldEpoch)
	}
	s := openStream(t, site+"/stream/"+room, "Last-Event-ID", old.ID)
	if oldest := resetOldest(t, s); oldest != fresh.ID {
		t.Errorf("resume with an id from before the restart: reset with oldest %q, want %q", oldest, fresh.ID)
	}
	if got := s.messages(t, 1); got[0].ID != fresh.ID {
		t.Errorf("after the reset: %q, want the message posted after the restart", got[0].Message)
	}
}

// waitGroup waits for wg for at most d and reports whether it is done.
func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
