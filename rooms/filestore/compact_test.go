package filestore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// deleteByModerator deletes the message id of room as a moderator does.
func deleteByModerator(t *testing.T, m *rooms.Manager, room, id string) rooms.Message {
	t.Helper()
	del, _, err := m.Submit(room, rooms.Post{User: "mod", Verified: true, Action: rooms.ActionDelete, Target: id, ByModerator: true})
	if err != nil {
		t.Fatalf("deleting %s: %v", id, err)
	}
	return del
}

// fileHolds reports whether the store's file holds text.
func fileHolds(t *testing.T, path, text string) bool {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(raw, []byte(text))
}

// TestDeletesShareACompaction: a run of deletes costs one copy of the
// file, or two, not one each, and an edit none; within CompactEvery the
// file holds none of the deleted texts.
func TestDeletesShareACompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	s := openStore(t, path)
	m := openManager(t, s, 100)
	var doomed []rooms.Message
	for i := range 20 {
		doomed = append(doomed, submit(t, m, "lobby", fmt.Sprintf("erase-me-%02d", i), ""))
	}
	kept := submit(t, m, "lobby", "helo", "")
	if _, _, err := m.Submit("lobby", rooms.Post{User: "alice", Action: rooms.ActionEdit, Target: kept.ID, Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Compactions; n != 0 {
		t.Fatalf("an edit compacted the file %d times, want none", n)
	}
	began := time.Now()
	for _, msg := range doomed {
		deleteByModerator(t, m, "lobby", msg.ID)
	}
	if n := s.Stats().Compactions; n > 2 {
		t.Errorf("20 deletes in %v compacted the file %d times, want 1 or 2", time.Since(began), n)
	}
	for deadline := began.Add(CompactEvery + 5*time.Second); fileHolds(t, path, "erase-me-"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the file holds a deleted text %v after the deletes", time.Since(began))
		}
	}
	if rep, _ := m.Messages("lobby", "", "", 100); len(rep.Messages) != 1 || rep.Messages[0].Message != "hello" {
		t.Errorf("history after the deletes: %v, want the edited message alone", texts(rep.Messages))
	}
}

// TestCompactionFailureKeepsTheDelete: a delete is stored, answered and
// heard by the room's streams when the compaction after it fails; the
// failure is reported, and the next compaction erases the text.
func TestCompactionFailureKeepsTheDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	s := openStore(t, path)
	var failures atomic.Int32
	s.OnCompactError(func(error) { failures.Add(1) })
	m := openManager(t, s, 100)
	target := submit(t, m, "lobby", "erase-me", "")
	// The compaction's new file cannot be made: a directory that
	// os.Remove cannot remove holds its name.
	obstacle := path + ".compact"
	if err := os.MkdirAll(filepath.Join(obstacle, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	sub, err := m.Subscribe("lobby", rooms.Position{LastEventID: target.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	del := deleteByModerator(t, m, "lobby", target.ID)
	if got, _ := m.Lookup("lobby", target.ID); !got.Deleted {
		t.Fatal("the delete was answered but its target is not deleted")
	}
	es, err := sub.Take(nil)
	if err != nil || len(es) != 1 || es[0].Message.ID != del.ID {
		t.Fatalf("the stream got %v (%v), want the delete %s", es, err, del.ID)
	}
	// The compaction follows the commit that answered the delete.
	for deadline := time.Now().Add(5 * time.Second); failures.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the failed compaction was not reported")
		}
	}
	if err := os.RemoveAll(obstacle); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(CompactEvery + 5*time.Second); fileHolds(t, path, "erase-me"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the file still holds the deleted text after the obstacle went")
		}
	}
}

// TestDeleteErasedAfterACrash: a process that stops within CompactEvery of
// a delete, before the compaction, leaves the text in the file; the next
// process to open the file erases it at once.
func TestDeleteErasedAfterACrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chat.db")
	s := openStore(t, path)
	m := openManager(t, s, 100)
	first := submit(t, m, "lobby", "first-doomed", "")
	second := submit(t, m, "lobby", "second-doomed", "")
	deleteByModerator(t, m, "lobby", first.ID)  // compacts at once
	deleteByModerator(t, m, "lobby", second.ID) // waits for CompactEvery
	// What a kill -9 leaves now: the file as committed.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "crashed.db")
	if err := os.WriteFile(crashed, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if !fileHolds(t, crashed, "second-doomed") {
		t.Fatal("the file holds no deleted text before its compaction: the test shows nothing")
	}
	restarted := openStore(t, crashed)
	for deadline := time.Now().Add(5 * time.Second); fileHolds(t, crashed, "second-doomed"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the restarted store left the deleted text in the file")
		}
	}
	if err := restarted.Close(); err != nil {
		t.Fatal(err)
	}
	again := openStore(t, crashed)
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if n := again.Stats().Compactions; n != 0 {
		t.Errorf("a store erased as it stopped compacted again at the next start (%d)", n)
	}
}
