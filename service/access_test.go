package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/token"
)

// reasonOf is the reason of a refusal, "" for no error.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not a refusal", err)
	}
	return e.Reason
}

// TestPrivateRoomsNeedGrants: a private room refuses every act without a
// token, and with one, what it does not grant; public rooms are unchanged,
// and the listing hides what a caller may not read.
func TestPrivateRoomsNeedGrants(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Private: NewPrivateRooms("team-*")})
	ctx := context.Background()
	reader := Caller{User: "alice", Addr: "192.0.2.1", Grants: &token.Grants{Read: rooms.Patterns{"team-*"}, Post: rooms.Patterns{"team-a"}}}
	for _, room := range []string{"team-a", "team-b", "lobby"} {
		if _, err := s.Submit(ctx, alice, Post{Room: "lobby", Message: "to make " + room}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Submit(ctx, reader, Post{Room: "team-a", Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		err    error
		reason string
	}{
		{"post without a token", func() error { _, err := s.Submit(ctx, stranger, Post{Room: "team-a", Message: "x"}); return err }(), "token_missing"},
		{"post without the grant", func() error { _, err := s.Submit(ctx, reader, Post{Room: "team-b", Message: "x"}); return err }(), "no_grant"},
		{"public post", func() error { _, err := s.Submit(ctx, stranger, Post{Room: "lobby", Message: "x"}); return err }(), ""},
		{"history without a token", func() error { _, err := s.History(stranger, "team-a", "", "", 10); return err }(), "token_missing"},
		{"history with the grant", func() error { _, err := s.History(reader, "team-b", "", "", 10); return err }(), ""},
		{"presence without a token", func() error { _, err := s.Presence(stranger, "team-a"); return err }(), "token_missing"},
		{"stream without a token", func() error { _, err := s.OpenStream(stranger, StreamRequest{Room: "team-a"}, nil); return err }(), "token_missing"},
		{"refused token, public room", func() error {
			_, err := s.History(Caller{Refused: TokenRefusal(&token.Error{Reason: token.Expired})}, "lobby", "", "", 10)
			return err
		}(), "token_expired"},
	} {
		if got := reasonOf(t, c.err); got != c.reason {
			t.Errorf("%s: refused for %q, want %q (%v)", c.name, got, c.reason, c.err)
		}
	}
	names := func(c Caller) (out []string) {
		list, err := s.Rooms(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range list {
			out = append(out, info.Name)
		}
		return out
	}
	if got := names(stranger); len(got) != 1 || got[0] != "lobby" {
		t.Errorf("a stranger's listing: %v, want lobby alone", got)
	}
	if got := names(reader); len(got) != 2 {
		t.Errorf("a reader's listing: %v, want lobby and team-a", got)
	}
	moderator := Caller{Grants: &token.Grants{Moderate: rooms.Patterns{"team-*"}}}
	if reader.Moderates("team-a") || !moderator.Moderates("team-a") || moderator.Moderates("lobby") {
		t.Error("Moderates does not follow the moderate grant")
	}
}

// TestStreamEndsAtTokenExpiry: a stream opened with a token ends at its
// exp with an expired event, after what was posted before.
func TestStreamEndsAtTokenExpiry(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{})
	c := Caller{User: "alice", Addr: "192.0.2.1", Grants: &token.Grants{}, Expires: time.Now().Add(200 * time.Millisecond)}
	st, err := s.OpenStream(c, StreamRequest{Room: "lobby"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "before"}); err != nil {
		t.Fatal(err)
	}
	var got []*rooms.Event
	deadline := time.After(2 * time.Second)
	for {
		select {
		case <-st.Ready():
		case <-deadline:
			t.Fatalf("the stream did not end at its token's exp; events %d", len(got))
		}
		events, err := st.Take(nil)
		got = append(got, events...)
		if errors.Is(err, rooms.ErrExpired) {
			break
		}
	}
	if len(got) != 2 || got[0].Message.Message != "before" || got[1].Kind != rooms.EventExpired {
		t.Fatalf("events %v: want the message, then expired", got)
	}
}

// TestTokenModeratorsModerateTheirRooms: a token's moderate grant makes
// its holder a moderator of those rooms on a handler that does not
// moderate; a private room is moderated by its token moderators alone,
// and its authors edit and delete only with a post grant.
func TestTokenModeratorsModerateTheirRooms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	member := Caller{User: "alice", Addr: "192.0.2.1", UserByToken: true,
		Grants: &token.Grants{Read: rooms.Patterns{"team-*"}, Post: rooms.Patterns{"team-*"}}}
	tokenMod := Caller{User: "carol", Addr: "192.0.2.3", UserByToken: true,
		Grants: &token.Grants{Read: rooms.Patterns{"team-*"}, Moderate: rooms.Patterns{"team-a", "lobby"}}}

	plain := newService(t, Config{Private: NewPrivateRooms("team-*")})
	spam, err := plain.Submit(ctx, member, Post{Room: "team-a", Message: "spam"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Ban(tokenMod, "team-a", BanRequest{User: "alice"}); err != nil {
		t.Fatalf("a token moderator's ban of their room: %v", err)
	}
	if reason := reasonOf(t, post(plain, member, "team-a", "again")); reason != "banned" {
		t.Errorf("the banned member's post: refused for %q, want banned", reason)
	}
	if _, err := plain.DeleteMessage(context.Background(), tokenMod, "team-a", spam.Message.ID, "", true); err != nil {
		t.Fatalf("a token moderator's delete in their room: %v", err)
	}
	if _, err := plain.Ban(tokenMod, "team-b", BanRequest{User: "alice"}); kindOf(t, err) != Forbidden {
		t.Errorf("a token moderator's ban of another room: %v, want Forbidden", err)
	}
	if _, err := plain.Bans(Caller{User: "carol", UserByToken: true, Grants: &token.Grants{Moderate: rooms.Patterns{"team-a"}}}, "team-a"); err != nil {
		t.Errorf("a token moderator listing the bans of their room: %v", err)
	}
	if _, err := plain.Bans(Caller{Grants: &token.Grants{Moderate: rooms.Patterns{"team-a"}}}, "team-a"); kindOf(t, err) != Forbidden {
		t.Errorf("a token that grants moderating but names no user: %v, want Forbidden", err)
	}

	moderated := newService(t, Config{Moderate: true, EditWindow: time.Minute, Private: NewPrivateRooms("team-*")})
	mine, err := moderated.Submit(ctx, member, Post{Room: "team-a", Message: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		err    error
		reason string
	}{
		{"a mount moderator banning in a private room", func() error { _, err := moderated.Ban(moderator, "team-a", BanRequest{User: "bob"}); return err }(), "token_missing"},
		{"a mount moderator banning in a public room", func() error { _, err := moderated.Ban(moderator, "lobby", BanRequest{User: "bob"}); return err }(), ""},
		{"a reader's edit in a private room", func() error {
			_, err := moderated.EditMessage(context.Background(), Caller{User: "alice", UserByToken: true, Grants: &token.Grants{Read: rooms.Patterns{"team-*"}}}, "team-a", mine.Message.ID, "changed", "")
			return err
		}(), "no_grant"},
		{"a reader's delete in a private room", func() error {
			_, err := moderated.DeleteMessage(context.Background(), Caller{User: "alice", UserByToken: true, Grants: &token.Grants{Read: rooms.Patterns{"team-*"}}}, "team-a", mine.Message.ID, "", false)
			return err
		}(), "no_grant"},
		{"an author's edit with the post grant", func() error {
			_, err := moderated.EditMessage(context.Background(), member, "team-a", mine.Message.ID, "changed", "")
			return err
		}(), ""},
	} {
		if got := reasonOf(t, c.err); got != c.reason {
			t.Errorf("%s: refused for %q, want %q (%v)", c.name, got, c.reason, c.err)
		}
	}
	if _, err := moderated.Bans(member, "lobby"); kindOf(t, err) != Unauthenticated {
		t.Errorf("a token user without the moderate grant on a moderating mount: %v, want Unauthenticated: the mount's moderators are its identities", err)
	}
}

// TestDeletePrivateRoomNeedsModerateGrant: deleting a private room takes
// a token that grants moderating it; without a token, a missing room is
// refused as an existing one is, and a refused token says why first.
func TestDeletePrivateRoomNeedsModerateGrant(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{AllowDelete: true, Private: NewPrivateRooms("team-*")})
	poster := Caller{User: "alice", Addr: "192.0.2.1", Grants: &token.Grants{Post: rooms.Patterns{"team-*"}, Read: rooms.Patterns{"team-*"}}}
	if err := post(s, poster, "team-a", "plans"); err != nil {
		t.Fatal(err)
	}
	expired := Caller{Refused: TokenRefusal(&token.Error{Reason: token.Expired})}
	moderator := Caller{User: "carol", Grants: &token.Grants{Moderate: rooms.Patterns{"team-a"}}}
	for _, c := range []struct {
		name   string
		caller Caller
		room   string
		reason string
	}{
		{"no token", stranger, "team-a", "token_missing"},
		{"no token, a room that does not exist", stranger, "team-nonexistent", "token_missing"},
		{"an expired token", expired, "team-a", "token_expired"},
		{"a token that may post and read", poster, "team-a", "no_grant"},
		{"the moderate grant", moderator, "team-a", ""},
	} {
		if got := reasonOf(t, s.Delete(c.caller, c.room)); got != c.reason {
			t.Errorf("%s: refused for %q, want %q", c.name, got, c.reason)
		}
	}
	if err := s.Delete(moderator, "team-a"); kindOf(t, err) != NotFound {
		t.Errorf("deleting team-a again: %v, want NotFound: the moderator deleted it", err)
	}
}

// TestStreamRefusesTokenPastExp: a token past its exp, which still
// verifies within the leeway of clock skew, opens no stream, which would
// end at once: it is refused as expired, so that its reader fetches a
// fresh one.
func TestStreamRefusesTokenPastExp(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{})
	c := Caller{User: "alice", Addr: "192.0.2.1", Grants: &token.Grants{}, Expires: time.Now().Add(-10 * time.Second)}
	st, err := s.OpenStream(c, StreamRequest{Room: "lobby"}, nil)
	if err == nil {
		st.Close()
	}
	if reason := reasonOf(t, err); reason != "token_expired" || kindOf(t, err) != Unauthenticated {
		t.Fatalf("a stream with a token 10 s past exp: %v, want Unauthenticated token_expired", err)
	}
}

// TestOnlyStarGrantModeratesAllRooms: a ban in every room (rooms.AllRooms,
// the name "*") takes a moderate grant of exactly "*": patterns such as ?
// or ** that match the name "*" moderate only the rooms they match.
func TestOnlyStarGrantModeratesAllRooms(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{})
	for _, pattern := range []string{"?", "**", "?*"} {
		c := Caller{User: "carol", UserByToken: true, Grants: &token.Grants{Moderate: rooms.Patterns{pattern}}}
		if _, err := s.Ban(c, rooms.AllRooms, BanRequest{User: "bob"}); kindOf(t, err) != Forbidden {
			t.Errorf("a moderate grant of %q bans in every room: %v, want Forbidden", pattern, err)
		}
		if !c.Moderates("x") {
			t.Errorf("a moderate grant of %q does not moderate room x", pattern)
		}
	}
	star := Caller{User: "carol", UserByToken: true, Grants: &token.Grants{Moderate: rooms.Patterns{"*"}}}
	if _, err := s.Ban(star, rooms.AllRooms, BanRequest{User: "bob"}); err != nil {
		t.Errorf("a moderate grant of \"*\" bans in every room: %v", err)
	}
}
