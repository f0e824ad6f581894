package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// refusalOf is the kind and reason of a refusal, and fails t for
// anything else.
func refusalOf(t *testing.T, err error) (Kind, string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not a refusal", err)
	}
	return e.Kind, e.Reason
}

// TestSubmitHandsAnonymousAuthorsASecret: a post without an identity is
// answered with a secret, which its message's JSON never carries; one with
// an identity, and a repeat, with none.
func TestSubmitHandsAnonymousAuthorsASecret(t *testing.T) {
	s := newService(t, Config{EditWindow: time.Minute})
	anon, err := s.Submit(context.Background(), stranger, Post{Room: "lobby", User: "sam", Message: "hi", Key: "k1", KeyGiven: true})
	if err != nil || len(anon.Secret) < 16 {
		t.Fatalf("an anonymous post: %+v, %v; want a secret", anon, err)
	}
	if b, _ := anon.Message.MarshalJSON(); strings.Contains(string(b), anon.Secret) {
		t.Fatalf("the message's JSON carries the secret: %s", b)
	}
	again, err := s.Submit(context.Background(), stranger, Post{Room: "lobby", User: "sam", Message: "hi", Key: "k1", KeyGiven: true})
	if err != nil || !again.Repeat || again.Secret != "" {
		t.Fatalf("a repeat: %+v, %v; want no secret", again, err)
	}
	verified, err := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hi"})
	if err != nil || verified.Secret != "" {
		t.Fatalf("a post with an identity: %+v, %v; want no secret", verified, err)
	}
}

// TestEditMessageByItsAuthor: an anonymous author edits with the secret,
// one with an identity by that identity; no one else can, and the history
// shows the latest text and when it was edited.
func TestEditMessageByItsAuthor(t *testing.T) {
	s := newService(t, Config{EditWindow: time.Minute})
	anon, _ := s.Submit(context.Background(), stranger, Post{Room: "lobby", User: "sam", Message: "helo"})
	mine, _ := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hi bob"})
	bob := Caller{User: "bob", Addr: "192.0.2.3"}
	for _, tt := range []struct {
		name   string
		caller Caller
		id     string
		secret string
	}{
		{"anonymous, without the secret", stranger, anon.Message.ID, ""},
		{"anonymous, with another message's secret", stranger, anon.Message.ID, "AAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{"an identity, on an anonymous message, with no secret", bob, anon.Message.ID, ""},
		{"another identity", bob, mine.Message.ID, ""},
		{"anonymous, on a message with an identity, with a secret", stranger, mine.Message.ID, anon.Secret},
	} {
		_, err := s.EditMessage(context.Background(), tt.caller, "lobby", tt.id, "changed", tt.secret)
		if kind, reason := refusalOf(t, err); kind != Forbidden || reason != "not_yours" {
			t.Errorf("%s: %v, want Forbidden not_yours", tt.name, err)
		}
	}
	if _, err := s.EditMessage(context.Background(), stranger, "lobby", anon.Message.ID, "hello", anon.Secret); err != nil {
		t.Fatalf("the anonymous author's edit: %v", err)
	}
	ed, err := s.EditMessage(context.Background(), alice, "lobby", mine.Message.ID, "hi, bob", "")
	if err != nil || ed.Target != mine.Message.ID {
		t.Fatalf("the author's edit by identity: %+v, %v", ed, err)
	}
	rep, _ := s.History(Caller{}, "lobby", "", "", 10)
	if len(rep.Messages) != 2 || rep.Messages[0].Message != "hello" || rep.Messages[1].Message != "hi, bob" || rep.Messages[1].Edited.IsZero() {
		t.Fatalf("history after the edits: %+v", rep.Messages)
	}
	if _, err := s.EditMessage(context.Background(), alice, "lobby", mine.Message.ID, "", ""); kindOf(t, err) != Invalid {
		t.Errorf("an edit to an empty text: %v, want Invalid", err)
	}
	if _, err := s.EditMessage(context.Background(), alice, "lobby", mine.Message.ID, strings.Repeat("x", 5<<10), ""); kindOf(t, err) != TooLarge {
		t.Errorf("an edit past the size limit: %v, want TooLarge", err)
	}
}

// TestEditWindow: an author's edits and deletes end with the window, and
// a window of 0 allows none; a moderator's delete knows no window.
func TestEditWindow(t *testing.T) {
	s := newService(t, Config{EditWindow: 50 * time.Millisecond, Moderate: true})
	p, _ := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hi"})
	time.Sleep(100 * time.Millisecond)
	_, err := s.EditMessage(context.Background(), alice, "lobby", p.Message.ID, "changed", "")
	if kind, reason := refusalOf(t, err); kind != Forbidden || reason != "edit_window_passed" {
		t.Errorf("an edit after the window: %v, want Forbidden edit_window_passed", err)
	}
	_, err = s.DeleteMessage(context.Background(), alice, "lobby", p.Message.ID, "", false)
	if kind, reason := refusalOf(t, err); kind != Forbidden || reason != "edit_window_passed" {
		t.Errorf("a delete after the window: %v, want Forbidden edit_window_passed", err)
	}
	if _, err := s.DeleteMessage(context.Background(), Caller{User: "mod"}, "lobby", p.Message.ID, "", true); err != nil {
		t.Errorf("a moderator's delete after the window: %v", err)
	}

	off := newService(t, Config{})
	p, _ = off.Submit(context.Background(), alice, Post{Room: "lobby", Message: "hi"})
	_, err = off.EditMessage(context.Background(), alice, "lobby", p.Message.ID, "changed", "")
	if kind, reason := refusalOf(t, err); kind != Forbidden || reason != "edit_window_passed" {
		t.Errorf("an edit with no window: %v, want Forbidden edit_window_passed", err)
	}
}

// TestDeleteMessage: a moderator with an identity deletes any message, an
// author their own; what is gone, or never was, is not found.
func TestDeleteMessage(t *testing.T) {
	s := newService(t, Config{EditWindow: time.Minute, Moderate: true})
	anon, _ := s.Submit(context.Background(), stranger, Post{Room: "lobby", User: "sam", Message: "spam"})
	mine, _ := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "oops"})
	unmoderated := newService(t, Config{EditWindow: time.Minute})
	if _, err := unmoderated.DeleteMessage(context.Background(), Caller{User: "mod"}, "lobby", anon.Message.ID, "", true); kindOf(t, err) != Forbidden {
		t.Errorf("a moderator's delete where the handler does not moderate: %v, want Forbidden", err)
	}
	if _, err := s.DeleteMessage(context.Background(), Caller{Addr: "192.0.2.9"}, "lobby", anon.Message.ID, "", true); kindOf(t, err) != Unauthenticated {
		t.Errorf("a moderator without an identity: %v, want Unauthenticated", err)
	}
	if _, err := s.DeleteMessage(context.Background(), Caller{User: "mod", CrossSite: true}, "lobby", anon.Message.ID, "", true); kindOf(t, err) != Forbidden {
		t.Errorf("a moderator's delete from another site: %v, want Forbidden", err)
	}
	del, err := s.DeleteMessage(context.Background(), Caller{User: "mod"}, "lobby", anon.Message.ID, "", true)
	if err != nil || !del.ByModerator || del.Target != anon.Message.ID {
		t.Fatalf("a moderator's delete: %+v, %v", del, err)
	}
	own, err := s.DeleteMessage(context.Background(), alice, "lobby", mine.Message.ID, "", false)
	if err != nil || own.ByModerator {
		t.Fatalf("the author's delete: %+v, %v", own, err)
	}
	if rep, _ := s.History(Caller{}, "lobby", "", "", 10); len(rep.Messages) != 0 {
		t.Fatalf("history after both deletes: %+v", rep.Messages)
	}
	for _, tt := range []struct {
		name   string
		caller Caller
		id     string
		mod    bool
	}{
		{"a deleted message, by its author", alice, mine.Message.ID, false},
		{"a deleted message, by a moderator", Caller{User: "mod"}, anon.Message.ID, true},
		{"a delete's id", Caller{User: "mod"}, del.ID, true},
		{"an unknown id", alice, "x-99", false},
	} {
		_, err := s.DeleteMessage(context.Background(), tt.caller, "lobby", tt.id, "", tt.mod)
		if kind, reason := refusalOf(t, err); kind != NotFound || reason != "not_found" {
			t.Errorf("%s: %v, want NotFound not_found", tt.name, err)
		}
	}
	if _, err := s.DeleteMessage(context.Background(), Caller{User: "mod"}, "nowhere", mine.Message.ID, "", true); kindOf(t, err) != NotFound {
		t.Errorf("a delete in a room that does not exist: %v, want NotFound", err)
	}
}

// TestEditsCountAgainstRateLimit: an author's edits and deletes are posts
// to the rate limit, each an entry of the room's log: past the limit, an
// edit is refused and changes nothing, and so is a delete.
func TestEditsCountAgainstRateLimit(t *testing.T) {
	ctx := context.Background()
	s := newService(t, Config{EditWindow: time.Minute, RatePosts: 2, RateWindow: time.Hour})
	p, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "helo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.EditMessage(ctx, alice, "lobby", p.Message.ID, "hello", ""); err != nil {
		t.Fatalf("an edit within the limit: %v", err)
	}
	if _, err := s.EditMessage(ctx, alice, "lobby", p.Message.ID, "hello!", ""); kindOf(t, err) != RateLimited {
		t.Errorf("a third entry within the hour, an edit: %v, want RateLimited", err)
	}
	if _, err := s.DeleteMessage(ctx, alice, "lobby", p.Message.ID, "", false); kindOf(t, err) != RateLimited {
		t.Errorf("a third entry within the hour, a delete: %v, want RateLimited", err)
	}
	if m, err := s.m.Lookup("lobby", p.Message.ID); err != nil || m.Message != "hello" || m.Deleted {
		t.Errorf("after the refusals the message is %+v (%v), want the text of the one edit", m, err)
	}
}
