package chat

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// storeConfig is a Caddyfile for the caddy binary with the file store, at
// path or, when path is "", at its default place.
func storeConfig(admin, site, path, global, handler string) string {
	return fmt.Sprintf("{\n\tadmin %s\n\tchat {\n\t\tstore file %s\n\t\t%s\n\t}\n}\n%s {\n\tchat {\n\t\t%s\n\t}\n}\n", admin, path, global, site, handler)
}

// stopBinary runs caddy stop and waits for caddy to exit.
func stopBinary(t *testing.T, admin string, exited <-chan error) {
	t.Helper()
	if out, err := exec.Command(caddyBinary(t), "stop", "--address", admin).CombinedOutput(); err != nil {
		t.Fatalf("caddy stop: %v\n%s", err, out)
	}
	select {
	case <-exited:
	case <-time.After(wait):
		t.Fatal("caddy did not exit after caddy stop")
	}
}

// roomMessages returns every message GET /rooms/{room}/messages gives, and
// whether the answer was a reset.
func roomMessages(t *testing.T, site, room string) ([]rooms.Message, bool) {
	t.Helper()
	page := messagesPage(t, site, room, "limit=1000")
	return page.Messages, page.Reset
}

// TestCLIStoreRestart: with store file, 1,000 messages over 10 rooms are
// all there after caddy stop and caddy run, with their ids, and a client
// resuming with an id from before the restart gets what it missed: no
// reset, no gap, no duplicate.
func TestCLIStoreRestart(t *testing.T) {
	const roomCount, perRoom = 10, 100
	dir := t.TempDir()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	cfg := storeConfig(admin, site, "", "", "")
	exited := runBinary(t, dir, cfg, site)

	names := make([]string, roomCount)
	sent := make([][]rooms.Message, roomCount)
	errs := make([]error, roomCount)
	var wg sync.WaitGroup
	for r := range names {
		names[r] = roomFor(t, fmt.Sprint(r))
		wg.Go(func() {
			for i := range perRoom {
				m, err := tryPostJSON(site, names[r], "alice", fmt.Sprint("message ", i))
				if err != nil {
					errs[r] = err
					return
				}
				sent[r] = append(sent[r], m)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	stopBinary(t, admin, exited)
	// Caddy's data directory is XDG_DATA_HOME/caddy.
	if _, err := os.Stat(filepath.Join(dir, "caddy", "chat", "history.db")); err != nil {
		t.Errorf("no store file at the default path: %v", err)
	}

	runBinary(t, dir, cfg, site)
	for r, name := range names {
		got, reset := roomMessages(t, site, name)
		if reset || ids(got) != ids(sent[r]) || texts(got) != texts(sent[r]) {
			t.Errorf("room %s after the restart (reset %v):\n%s\nwant\n%s", name, reset, ids(got), ids(sent[r]))
		}
	}
	s := openStream(t, site+"/stream/"+names[0], "Last-Event-ID", sent[0][49].ID)
	defer s.close()
	next := postJSON(t, site, names[0], "alice", "after the restart")
	want := append(sent[0][50:], next)
	if got := s.messages(t, len(want)); ids(got) != ids(want) {
		t.Errorf("resumed after %s:\n%s\nwant\n%s", sent[0][49].ID, ids(got), ids(want))
	}
	if wantID := rooms.FormatID(strings.Split(sent[0][0].ID, "-")[0], perRoom+1); next.ID != wantID {
		t.Errorf("first id after the restart %s, want %s", next.ID, wantID)
	}
}

// TestCLIStoreKill: caddy killed with SIGKILL during a load of 2,000
// submits, each retried with its Idempotency-Key until answered: after the
// restart every message that was acknowledged is there exactly once, with
// the id it was acknowledged with, and ids increase in every room.
func TestCLIStoreKill(t *testing.T) {
	const total, publishers, roomCount, killAfter = 2000, 20, 4, 600
	dir := t.TempDir()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	cfg := storeConfig(admin, site, filepath.Join(dir, "chat.db"), "", "")
	process, exited := startBinary(t, dir, cfg, site)

	names := make([]string, roomCount)
	for r := range names {
		names[r] = roomFor(t, fmt.Sprint(r))
	}
	acked := make([]string, total) // the id each message was acknowledged with
	var ackedCount, retried atomic.Int64
	errs := make([]error, publishers)
	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < total; i += publishers {
				body := fmt.Sprintf(`{"room":%q,"user":"alice","message":"m%d"}`, names[i%roomCount], i)
				for attempt := 0; ; attempt++ {
					resp, err := tryDo("POST", site+"/submit", body, "Content-Type", "application/json", "Idempotency-Key", fmt.Sprint("key-", i))
					if err == nil && (resp.status == http.StatusCreated || resp.status == http.StatusOK) {
						acked[i], _ = resp.json["id"].(string)
						ackedCount.Add(1)
						if attempt > 0 {
							retried.Add(1)
						}
						break
					}
					if err == nil && resp.status < 500 {
						errs[p] = fmt.Errorf("message %d: %d %s", i, resp.status, resp.body)
						return
					}
					if time.Now().After(deadline) {
						errs[p] = fmt.Errorf("message %d not acknowledged in time: %v", i, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	waitFor(t, "submits before the kill", func() bool { return ackedCount.Load() >= killAfter })
	if err := process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(wait):
		t.Fatal("caddy did not exit on SIGKILL")
	}
	before := ackedCount.Load()
	startBinary(t, dir, cfg, site)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d messages acknowledged before the kill, %d retried across it", before, retried.Load())

	seen := make(map[string]string) // message text → id
	for _, name := range names {
		got, reset := roomMessages(t, site, name)
		if reset {
			t.Errorf("room %s: reset after the restart", name)
		}
		var epoch string
		var last uint64
		for _, m := range got {
			e, seq, _ := rooms.ParseID(m.ID)
			if epoch == "" {
				epoch = e
			}
			if e != epoch || seq <= last {
				t.Errorf("room %s: id %s after sequence %d, epoch %s: ids must increase in one epoch", name, m.ID, last, epoch)
			}
			last = seq
			if id, dup := seen[m.Message]; dup {
				t.Errorf("%s stored twice: %s and %s", m.Message, id, m.ID)
			}
			seen[m.Message] = m.ID
		}
	}
	for i, id := range acked {
		if got := seen[fmt.Sprint("m", i)]; got != id {
			t.Errorf("m%d acknowledged as %s, stored as %q", i, id, got)
		}
	}
}

// TestCLIStoreRefused: a store path that cannot be written, a file another
// caddy holds and a corrupt file are each refused by caddy validate with the
// path and what to do, quickly, and the corrupt file is left as it was.
func TestCLIStoreRefused(t *testing.T) {
	dir := t.TempDir()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	held := filepath.Join(dir, "held.db")
	runBinary(t, dir, storeConfig(admin, site, held, "", ""), site)

	notDir := filepath.Join(dir, "file")
	garbage := filepath.Join(dir, "garbage.db")
	junk := []byte(strings.Repeat("this is not a store file\n", 1000))
	for _, f := range []struct {
		path string
		data []byte
	}{{notDir, nil}, {garbage, junk}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, path string
		want       []string
	}{
		{"unwritable", filepath.Join(notDir, "chat.db"), []string{notDir, "not a directory"}},
		{"locked", held, []string{held, "locked by another process"}},
		{"corrupt", garbage, []string{garbage, "not a valid store file", "move it aside"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "Caddyfile")
			cfg := storeConfig("localhost:"+freePort(), "http://localhost:"+freePort(), tt.path, "", "")
			if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			out, err := caddyCmd(t, "validate", "--config", file, "--adapter", "caddyfile")
			if err == nil {
				t.Fatalf("caddy validate accepted store file %s", tt.path)
			}
			if took := time.Since(start); took > wait {
				t.Errorf("caddy validate took %v to refuse", took)
			}
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("caddy validate said:\n%s\nwant it to say %q", out, want)
				}
			}
		})
	}
	if b, _ := os.ReadFile(garbage); string(b) != string(junk) {
		t.Error("the corrupt file was changed")
	}
}

// TestCLIStoreDropsData: a deleted room and a room swept as idle are gone
// after a restart too; a room still in use is kept.
func TestCLIStoreDropsData(t *testing.T) {
	dir := t.TempDir()
	admin, site := "localhost:"+freePort(), "http://localhost:"+freePort()
	cfg := storeConfig(admin, site, filepath.Join(dir, "chat.db"), "idle_timeout 1s", "allow_delete")
	exited := runBinary(t, dir, cfg, site)
	deleted, idle, kept := roomFor(t, "deleted"), roomFor(t, "idle"), roomFor(t, "kept")
	postJSON(t, site, deleted, "alice", "to be deleted")
	postJSON(t, site, idle, "alice", "to be swept")
	if resp := do(t, "DELETE", site+"/room/"+deleted, ""); resp.status != http.StatusNoContent && resp.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", resp.status, resp.body)
	}
	waitFor(t, "the idle room to be swept", func() bool {
		_, listed := listedRoom(t, site, idle)
		return !listed
	})
	// A stream keeps a room from the idle sweep.
	s := openStream(t, site+"/stream/"+kept)
	keptMsg := postJSON(t, site, kept, "alice", "kept")
	s.messages(t, 1)
	s.close()
	stopBinary(t, admin, exited)

	runBinary(t, dir, cfg, site)
	for _, name := range []string{deleted, idle} {
		if entry, listed := listedRoom(t, site, name); listed {
			t.Errorf("room %s is back after the restart: %v", name, entry)
		}
	}
	if got, _ := roomMessages(t, site, kept); ids(got) != keptMsg.ID {
		t.Errorf("room %s after the restart: %s, want %s", kept, ids(got), keptMsg.ID)
	}
}

// TestReloadChangesStore: a reload may change the store. The new store
// starts with what it holds, empty for memory; a reload back to the file
// finds the file's rooms as they were.
func TestReloadChangesStore(t *testing.T) {
	file := config{global: "store file " + filepath.Join(t.TempDir(), "chat.db")}
	startCaddy(t, file)
	room := roomFor(t, "a")
	kept := postJSON(t, rootSite, room, "alice", "in the file")

	reload(t, config{global: "store memory"})
	if resp := do(t, "GET", rootSite+"/rooms/"+room+"/messages", ""); resp.status != http.StatusNotFound {
		t.Errorf("the memory store has the file's room: %d %s", resp.status, resp.body)
	}
	postJSON(t, rootSite, room, "alice", "in memory")

	reload(t, file)
	if got, _ := roomMessages(t, rootSite, room); ids(got) != kept.ID {
		t.Errorf("back to the file: %s, want %s", ids(got), kept.ID)
	}
}

// TestStoreFailureAnswers503: when the store can no longer write, a submit
// answers 503 with Retry-After and a JSON error, stores nothing, and a
// stream already open stays open.
func TestStoreFailureAnswers503(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	startCaddy(t, config{global: "store file " + path})
	defer reload(t, config{})
	room := roomFor(t, "a")
	before := postJSON(t, rootSite, room, "alice", "stored")
	s := openStream(t, rootSite+"/stream/"+room, "Last-Event-ID", before.ID)
	defer s.close()

	// Closing the store's file under the running config fails every
	// write from now on, as a disk that went away does.
	key := "chat file " + path
	shared, _, err := managers.LoadOrNew(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = shared.(managerDestructor).store.Close()
	if _, derr := managers.Delete(key); err != nil || derr != nil {
		t.Fatal(err, derr)
	}

	resp := do(t, "POST", rootSite+"/submit", fmt.Sprintf(`{"room":%q,"user":"alice","message":"lost"}`, room), "Content-Type", "application/json")
	if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" || resp.json["error"] != rooms.ErrUnavailable.Error() {
		t.Errorf("submit with a failed store: %d, Retry-After %q, %s; want 503, a Retry-After and %q", resp.status, resp.header.Get("Retry-After"), resp.body, rooms.ErrUnavailable)
	}
	s.quiet(t, 200*time.Millisecond)
	if entry, _ := listedRoom(t, rootSite, room); entry["last_id"] != before.ID {
		t.Errorf("after the failed submit the room is at %v, want %s", entry["last_id"], before.ID)
	}
}
