package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-chat/caddy-chat/rooms"
)

func openStore(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openManager(t *testing.T, s *Store, history int) *rooms.Manager {
	t.Helper()
	m, err := rooms.Open(context.Background(), rooms.Config{History: history, Buffer: 10, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func submit(t *testing.T, m *rooms.Manager, room, text, key string) rooms.Message {
	t.Helper()
	msg, _, err := m.Submit(room, rooms.Post{User: "alice", Text: text, Key: key, Scope: "client"})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func texts(msgs []rooms.Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.Message)
	}
	return b.String()
}

// TestRestart: a room comes back after a restart with its epoch, its ids,
// its messages as they were acknowledged, and its idempotency keys.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat", "history.db")
	s := openStore(t, path)
	m := openManager(t, s, 3)
	var sent []rooms.Message
	for i := 1; i <= 5; i++ {
		sent = append(sent, submit(t, m, "lobby", fmt.Sprint(i), fmt.Sprint("k", i)))
	}
	if _, _, err := m.Submit("other", rooms.Post{User: "Bob", Text: "x", Verified: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path)
	defer s.Close()
	m = openManager(t, s, 3)
	defer m.Close()
	if got := m.Rooms(); len(got) != 2 || got[0].Name != "lobby" || got[0].LastID != sent[4].ID {
		t.Fatalf("rooms after the restart: %+v, want lobby at %s and other", got, sent[4].ID)
	}
	rep, err := m.Messages("lobby", sent[2].ID, "", 10)
	if err != nil || rep.Reset || texts(rep.Messages) != "4,5" {
		t.Fatalf("after %s: %q, reset %v, %v; want 4,5 and no reset", sent[2].ID, texts(rep.Messages), rep.Reset, err)
	}
	if got := rep.Messages[1]; got != sent[4] {
		t.Errorf("stored %+v, read back %+v", sent[4], got)
	}
	next := submit(t, m, "lobby", "6", "")
	if epoch, seq, _ := rooms.ParseID(next.ID); epoch != strings.Split(sent[0].ID, "-")[0] || seq != 6 {
		t.Errorf("first id after the restart %s, want the old epoch's 6", next.ID)
	}

	// The keys of messages still kept are recognised; those trimmed with
	// their message are forgotten with it.
	tests := []struct {
		key, text string
		want      string
		repeat    bool
		err       error
	}{
		{"k5", "5", sent[4].ID, true, nil},
		{"k4", "4", sent[3].ID, true, nil},
		{"k5", "changed", "", false, rooms.ErrKeyReused},
	}
	for _, tt := range tests {
		msg, repeat, err := m.Submit("lobby", rooms.Post{User: "alice", Text: tt.text, Key: tt.key, Scope: "client"})
		if !errors.Is(err, tt.err) || repeat != tt.repeat || (tt.want != "" && msg.ID != tt.want) {
			t.Errorf("retry with %s %q: %s, repeat %v, %v; want %s, repeat %v, %v", tt.key, tt.text, msg.ID, repeat, err, tt.want, tt.repeat, tt.err)
		}
	}
	if _, _, err := m.Submit("other", rooms.Post{User: "bob", Text: "impostor", ReserveNames: true}); !errors.Is(err, rooms.ErrNameReserved) {
		t.Errorf("unverified post as bob after the restart: %v, want ErrNameReserved", err)
	}
	if msg, repeat, _ := m.Submit("lobby", rooms.Post{User: "alice", Text: "5", Key: "k5", Scope: "someone else"}); repeat {
		t.Errorf("another scope's retry of k5 was answered with %s", msg.ID)
	}

	// Restarted with a smaller history, a room shows what fits.
	m.Close()
	m = openManager(t, s, 1)
	if rep, err := m.Messages("lobby", "", "", 10); err != nil || texts(rep.Messages) != "5" {
		t.Errorf("with history 1: %q, %v; want the newest, 5 from someone else", texts(rep.Messages), err)
	}
}

// TestBounded: under steady traffic the file keeps each room's history and
// at most trimSlack messages more, with their keys, and reuses the pages of
// what it trimmed.
func TestBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	s := openStore(t, path)
	defer s.Close()
	m := openManager(t, s, 10)
	defer m.Close()
	text := strings.Repeat("x", 200)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	var first int64
	for round := range 5 {
		for i := range 400 {
			submit(t, m, fmt.Sprint("room", i%4), text, fmt.Sprint("key", round, i))
		}
		if round == 0 {
			first = size()
		}
	}
	if last := size(); last > first {
		t.Errorf("the file grew from %d to %d bytes under steady traffic", first, last)
	}
	err := s.commit.db.View(func(tx *bolt.Tx) error {
		for i := range 4 {
			b := roomBucket(tx, []byte(fmt.Sprint("room", i)))
			if n, k := b.Bucket(msgsBucket).Stats().KeyN, b.Bucket(keysBucket).Stats().KeyN; n < 10 || n > 10+trimSlack || k != n {
				t.Errorf("room%d holds %d messages and %d keys, want as many, from 10 to %d", i, n, k, 10+trimSlack)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHiddenPastHistory: messages past a room's history that the file still
// holds, waiting to be trimmed with others, are gone for every reader: not
// in the history, their keys forgotten after a restart (the process that
// posted them remembers their keys in memory, as it would with no
// history), and not shown again after a restart with a larger history. Trimming keeps the file within trimSlack
// messages of the history.
func TestHiddenPastHistory(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "history.db")
	s := openStore(t, path)
	h, err := s.Open(ctx, "lobby", 10)
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int) rooms.Key { return rooms.Key{Scope: "client", Name: fmt.Sprint("key", i)} }
	// Within the key window: the keys are remembered for their messages.
	base := time.Now().Truncate(time.Millisecond)
	msg := func(i int) rooms.Message {
		return rooms.Message{User: "alice", Message: fmt.Sprint(i), Time: base.Add(time.Duration(i) * time.Millisecond).UTC()}
	}
	for i := 1; i <= 30; i++ {
		if err := rooms.Append(ctx, h, []rooms.Entry{{Message: msg(i), Key: key(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	held := func() int {
		n := 0
		if err := s.commit.db.View(func(tx *bolt.Tx) error {
			n = roomBucket(tx, []byte("lobby")).Bucket(msgsBucket).Stats().KeyN
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := held(); n != 30 {
		t.Fatalf("the file holds %d messages, want all 30: fewer than trimSlack are past the history", n)
	}
	shows := func(h rooms.History, wantOldest uint64, restarted bool) {
		t.Helper()
		got, err := h.Read(ctx, h.Oldest()-1, h.Last(), 100)
		if err != nil {
			t.Fatal(err)
		}
		if h.Oldest() != wantOldest || len(got) != 10 || got[0].Message != fmt.Sprint(wantOldest) {
			t.Errorf("oldest %d, %d messages from %q; want 10 from %d", h.Oldest(), len(got), texts(got[:min(1, len(got))]), wantOldest)
		}
		if rec, err := h.Recall(ctx, key(5), msg(5)); restarted && (err != nil || rec.Seq != 0) {
			t.Errorf("the key of a hidden message: %+v %v, want forgotten", rec, err)
		}
		if rec, err := h.Recall(ctx, key(25), msg(25)); err != nil || rec.Seq != 25 || !rec.Same {
			t.Errorf("the key of a shown message: %+v %v, want message 25", rec, err)
		}
	}
	shows(h, 21, false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path)
	defer s.Close()
	if h, err = s.Open(ctx, "lobby", 100); err != nil {
		t.Fatal(err)
	}
	shows(h, 21, true)
	if err := h.Resize(ctx, 10); err != nil {
		t.Fatal(err)
	}
	for i := 31; i <= 200; i++ {
		if err := rooms.Append(ctx, h, []rooms.Entry{{Message: msg(i), Key: key(i)}}); err != nil {
			t.Fatal(err)
		}
		if n := held(); n < 10 || n > 10+trimSlack {
			t.Fatalf("after message %d the file holds %d, want 10 to %d", i, n, 10+trimSlack)
		}
	}
	if h.Oldest() != 191 {
		t.Errorf("oldest %d after 200 messages, want 191", h.Oldest())
	}
}

// TestDropRemovesData: deleting a room and sweeping an idle one remove
// their data from the file; a room that only had streams leaves none.
func TestDropRemovesData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	s := openStore(t, path)
	m, err := rooms.Open(context.Background(), rooms.Config{History: 10, Buffer: 10, Store: s, IdleTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	submit(t, m, "deleted", "1", "")
	submit(t, m, "idle", "1", "")
	sub, err := m.Subscribe("watched", rooms.Position{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	if err := m.Delete("deleted"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	holdsNoRoom(t, s)
	m.Close()
	s.Close()
}

// TestOpenRefuses: a path that cannot be written, a file another process
// holds and a file that is not a store are each refused with the path and
// the reason, and the file is left as it was.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	junk := bytes.Repeat([]byte("not a bolt file "), 4096)
	if err := os.WriteFile(garbage, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	held := filepath.Join(dir, "held.db")
	holder := openStore(t, held)
	defer holder.Close()

	tests := []struct {
		name, path string
		want       []string
		within     time.Duration
	}{
		{"unwritable", filepath.Join(notDir, "history.db"), []string{notDir, "not a directory"}, time.Second},
		{"locked", held, []string{held, "locked by another process"}, LockTimeout + time.Second},
		{"corrupt", garbage, []string{garbage, "not a valid store file", "move it aside", "mv "}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(tt.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded", tt.path)
			}
			if took := time.Since(start); took > tt.within {
				t.Errorf("refused after %v, want within %v", took, tt.within)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
	if b, _ := os.ReadFile(garbage); !bytes.Equal(b, junk) {
		t.Error("the corrupt file was changed")
	}
}

// TestFailingDisk: when the file cannot be written, a submit fails with
// rooms.ErrUnavailable, the room's position stays, and what was stored
// before can still be read.
func TestFailingDisk(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
	m := openManager(t, s, 10)
	defer m.Close()
	first := submit(t, m, "lobby", "1", "")
	// Closing bbolt's file under the store fails every write from now on,
	// as a disk that went away does.
	if err := s.commit.db.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, err := m.Submit("lobby", rooms.Post{User: "alice", Text: "2"})
	if !errors.Is(err, rooms.ErrUnavailable) {
		t.Errorf("submit to a failed store: %v, want ErrUnavailable", err)
	}
	if got := m.Rooms(); got[0].LastID != first.ID {
		t.Errorf("after a failed submit the room is at %s, want %s", got[0].LastID, first.ID)
	}
	s.commit.close()
}

// TestIdleAcrossRestart: a room taken back from the file counts as idle
// since its newest message, so a restart does not keep it longer than
// idle_timeout; it is swept from the file too.
func TestIdleAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	s := openStore(t, path)
	m := openManager(t, s, 10)
	submit(t, m, "lobby", "1", "")
	m.Close()
	s.Close()
	time.Sleep(1100 * time.Millisecond)

	s = openStore(t, path)
	defer s.Close()
	m, err := rooms.Open(context.Background(), rooms.Config{History: 10, Buffer: 10, Store: s, IdleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	for m.Len() > 0 && time.Since(start) < 5*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); m.Len() > 0 || took > 700*time.Millisecond {
		t.Errorf("the room idle since before the restart was swept after %v (%d rooms left), want at once", took, m.Len())
	}
	holdsNoRoom(t, s)
}

// holdsNoRoom fails t unless the file holds no room within 5 s: a room
// leaves the Manager first, then the file, with the Manager's lock
// released.
func holdsNoRoom(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		names, err := s.Kept(context.Background())
		if err == nil && len(names) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file still holds rooms %q (%v)", names, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEraseWhileReading: deletes compact the file under readers and
// writers of other rooms, which go on without an error, and the file
// holds none of the deleted texts afterwards.
func TestEraseWhileReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	s := openStore(t, path)
	m := openManager(t, s, 50)
	var doomed []rooms.Message
	for i := range 20 {
		doomed = append(doomed, submit(t, m, "lobby", fmt.Sprintf("erase-me-%02d", i), ""))
	}
	stop := make(chan struct{})
	errs := make(chan error, 2)
	go func() {
		for {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			if _, err := m.Messages("lobby", "", "", 50); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			if _, _, err := m.Submit("other", rooms.Post{User: "bob", Text: fmt.Sprint("keep ", i)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for _, msg := range doomed {
		if _, _, err := m.Submit("lobby", rooms.Post{User: "mod", Action: rooms.ActionDelete, Target: msg.ID, ByModerator: true}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a reader or writer during the deletes: %v", err)
		}
	}
	if rep, _ := m.Messages("lobby", "", "", 50); len(rep.Messages) != 0 {
		t.Fatalf("history after deleting every message: %v", texts(rep.Messages))
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("erase-me-")) {
		t.Fatal("the file still holds a deleted text")
	}
}
