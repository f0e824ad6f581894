package service

import (
	"context"
	"errors"
	"fmt"
	"github.com/caddy-chat/caddy-chat/token"
	"strings"
	"testing"
	"time"

	"github.com/caddy-chat/caddy-chat/blocklist"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// moderator is a signed-in caller of a handler that moderates.
var moderator = Caller{User: "mod", Addr: "192.0.2.9"}

// refusal returns err as a refusal, failing t when it is none.
func refusal(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not a refusal", err)
	}
	return e
}

// post submits text to room as c, returning the error only.
func post(s *Service, c Caller, room, text string) error {
	_, err := s.Submit(context.Background(), c, Post{Room: room, Message: text})
	return err
}

// TestBanRefusesPostsBeforeTheLimit: a banned author's posts are refused
// as banned, with the wait until the ban ends, before the rate limit
// counts them; other rooms take their posts, and once the ban is lifted
// the room does too, their limit untouched.
func TestBanRefusesPostsBeforeTheLimit(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true, RatePosts: 2, RateWindow: time.Hour})
	ban, err := s.Ban(moderator, "lobby", BanRequest{User: "alice", For: time.Hour, Reason: "spam"})
	if err != nil {
		t.Fatal(err)
	}
	if ban.By != "mod" || ban.Reason != "spam" || ban.Room != "lobby" || time.Until(ban.Expires) <= 59*time.Minute {
		t.Fatalf("the ban was put as %+v", ban)
	}
	for range 3 {
		e := refusal(t, post(s, alice, "lobby", "hi"))
		if e.Kind != Forbidden || e.Reason != "banned" || e.RetryAfter <= 59*time.Minute || e.RetryAfter > time.Hour {
			t.Fatalf("a banned author's post: %+v, want Forbidden, banned, with about an hour to wait", e)
		}
	}
	if err := post(s, alice, "other", "hi"); err != nil {
		t.Fatalf("a post to a room the author is not banned from: %v", err)
	}
	if err := s.Unban(moderator, "lobby", ban.ID); err != nil {
		t.Fatal(err)
	}
	if err := post(s, alice, "lobby", "back"); err != nil {
		t.Fatalf("a post after the ban was lifted: %v; the refused posts must not count", err)
	}
	if e := refusal(t, s.Unban(moderator, "lobby", ban.ID)); e.Kind != NotFound {
		t.Fatalf("lifting a lifted ban: %+v, want NotFound", e)
	}
}

// TestBanByMessage: a moderator bans the author of a message by its id: a
// verified author by their identity. A message that the room does not
// hold is not found, and a malformed id is refused.
func TestBanByMessage(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true})
	posted, err := s.Submit(context.Background(), alice, Post{Room: "lobby", Message: "spam"})
	msg := posted.Message
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ban(moderator, "lobby", BanRequest{Message: msg.ID}); err != nil {
		t.Fatal(err)
	}
	if e := refusal(t, post(s, alice, "lobby", "more")); e.Reason != "banned" {
		t.Fatalf("the author of a banned message posting again: %+v, want banned", e)
	}
	if err := post(s, Caller{User: "bob"}, "lobby", "hi"); err != nil {
		t.Fatalf("another author: %v", err)
	}
	epoch, seq, _ := rooms.ParseID(msg.ID)
	for _, tt := range []struct {
		id   string
		want Kind
	}{
		{rooms.FormatID(epoch, seq+5), NotFound},
		{"nonsense", Invalid},
	} {
		if _, err := s.Ban(moderator, "lobby", BanRequest{Message: tt.id}); kindOf(t, err) != tt.want {
			t.Errorf("banning by message %q: %v, want kind %d", tt.id, err, tt.want)
		}
	}
}

// TestBanAnonymousByClientKey: an anonymous author is banned by the key
// they post from, whatever name they give: an IPv4 address alone, an
// IPv6 client with its whole /64.
func TestBanAnonymousByClientKey(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true})
	for _, c := range []Caller{{Addr: "192.0.2.66"}, {Addr: "2001:db8:1:2::1"}} {
		if _, err := s.m.PutBan(rooms.Ban{Room: "lobby", Subject: c.key(), Expires: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		addr, user string
		banned     bool
	}{
		{"192.0.2.66", "anyone", true},
		{"192.0.2.66", "someone else", true},
		{"192.0.2.67", "anyone", false},
		{"2001:db8:1:2::ffff", "anyone", true},
		{"[2001:db8:1:2:aaaa::1]:4321", "anyone", true},
		{"2001:db8:1:3::1", "anyone", false},
	} {
		_, err := s.Submit(context.Background(), Caller{Addr: tt.addr}, Post{Room: "lobby", User: tt.user, Message: "hi"})
		if banned := err != nil && refusal(t, err).Reason == "banned"; banned != tt.banned || !banned && err != nil {
			t.Errorf("a post from %s as %q: %v; want banned %v", tt.addr, tt.user, err, tt.banned)
		}
	}
}

// TestBannedUserNamesOnlyIdentities: a ban of a verified user names
// them to moderators; one of an anonymous author names no one, so that
// their address is shown nowhere.
func TestBannedUserNamesOnlyIdentities(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		c    Caller
		want string
	}{
		{Caller{User: "alice", Addr: "192.0.2.1"}, "alice"},
		{Caller{User: "ip:192.0.2.1"}, "ip:192.0.2.1"},
		{Caller{Addr: "192.0.2.1"}, ""},
		{Caller{Addr: "2001:db8::1"}, ""},
	} {
		if got := BannedUser(rooms.Ban{Subject: tt.c.key()}); got != tt.want {
			t.Errorf("BannedUser of a ban of %+v: %q, want %q", tt.c, got, tt.want)
		}
	}
}

// TestBanAnonymousByMessageAndPurge: the author of an anonymous message is
// banned by the address it came from, under any name, and purge deletes
// what they posted in the room, and nothing of anyone else's.
func TestBanAnonymousByMessageAndPurge(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true})
	spammer, other := Caller{Addr: "192.0.2.66:1000"}, Caller{Addr: "192.0.2.67:1000"}
	var spam rooms.Message
	for i, c := range []Caller{spammer, other, spammer, spammer} {
		p, err := s.Submit(context.Background(), c, Post{Room: "lobby", User: fmt.Sprint("name", i), Message: fmt.Sprint("text ", i)})
		if err != nil {
			t.Fatal(err)
		}
		spam = p.Message
	}
	if _, err := s.Ban(moderator, "lobby", BanRequest{Message: spam.ID, Purge: true}); err != nil {
		t.Fatal(err)
	}
	if e := refusal(t, post(s, Caller{Addr: "192.0.2.66:2000"}, "lobby", "again")); e.Reason != "banned" {
		t.Fatalf("the anonymous author of a banned message, under another name and port: %+v, want banned", e)
	}
	rep, err := s.m.Messages("lobby", "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Messages) != 1 || rep.Messages[0].Message != "text 1" {
		t.Fatalf("history after the purge: %+v, want only the other client's message", rep.Messages)
	}
}

// TestBanForeverInEveryRoom: a ban of every room holds the author out of
// each, and one put forever has no end to wait for.
func TestBanForeverInEveryRoom(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true})
	ban, err := s.Ban(moderator, rooms.AllRooms, BanRequest{User: "alice", For: Forever})
	if err != nil {
		t.Fatal(err)
	}
	if !ban.Expires.IsZero() {
		t.Fatalf("a ban for ever expires at %v", ban.Expires)
	}
	for _, room := range []string{"lobby", "other"} {
		if e := refusal(t, post(s, alice, room, "hi")); e.Reason != "banned" || e.RetryAfter != 0 {
			t.Errorf("a post to %s: %+v, want banned with no end", room, e)
		}
	}
	bans, err := s.Bans(moderator, rooms.AllRooms)
	if err != nil || len(bans) != 1 || bans[0].ID != ban.ID {
		t.Fatalf("the bans of every room: %+v, %v; want %s", bans, err, ban.ID)
	}
	if bans, _ := s.Bans(moderator, "lobby"); len(bans) != 0 {
		t.Fatalf("the lobby lists %+v, a ban of every room", bans)
	}
}

// TestBanDefaultsToADay: a ban that names no duration lasts a day.
func TestBanDefaultsToADay(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true})
	ban, err := s.Ban(moderator, "lobby", BanRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if d := ban.Expires.Sub(ban.Created); d != DefaultBanFor {
		t.Fatalf("a ban with no duration lasts %v, want %v", d, DefaultBanFor)
	}
}

// TestModerationRefusals: bans are for signed-in moderators of a handler
// that moderates, through a request that names one subject, a duration
// and a short reason, in a room of the handler; each refusal changes
// nothing.
func TestModerationRefusals(t *testing.T) {
	t.Parallel()
	s := newService(t, Config{Moderate: true, Rooms: []string{"lobby"}})
	unmoderated := newService(t, Config{})
	for _, tt := range []struct {
		name   string
		s      *Service
		caller Caller
		room   string
		r      BanRequest
		want   Kind
	}{
		{"handler without moderate", unmoderated, moderator, "lobby", BanRequest{User: "bob"}, Forbidden},
		{"no identity", s, stranger, "lobby", BanRequest{User: "bob"}, Unauthenticated},
		{"cross-site", s, Caller{User: "mod", CrossSite: true}, "lobby", BanRequest{User: "bob"}, Forbidden},
		{"cross-site, as the adapters resolve it: no identity", s, Caller{CrossSite: true}, "lobby", BanRequest{User: "bob"}, Forbidden},
		{"no subject", s, moderator, "lobby", BanRequest{}, Invalid},
		{"two subjects", s, moderator, "lobby", BanRequest{User: "bob", Message: "x-1"}, Invalid},
		{"negative duration", s, moderator, "lobby", BanRequest{User: "bob", For: -time.Second}, Invalid},
		{"long reason", s, moderator, "lobby", BanRequest{User: "bob", Reason: strings.Repeat("x", maxBanReason+1)}, Invalid},
		{"room not allowed", s, moderator, "other", BanRequest{User: "bob"}, Forbidden},
		{"bad room name", s, moderator, "../x", BanRequest{User: "bob"}, Invalid},
		{"message in every room", newService(t, Config{Moderate: true}), moderator, rooms.AllRooms, BanRequest{Message: "x-1"}, Invalid},
	} {
		if _, err := tt.s.Ban(tt.caller, tt.room, tt.r); kindOf(t, err) != tt.want {
			t.Errorf("%s: %v, want kind %d", tt.name, err, tt.want)
		}
	}
	if err := post(s, Caller{User: "bob"}, "lobby", "hi"); err != nil {
		t.Fatalf("bob after refused bans: %v", err)
	}
	if _, err := unmoderated.Bans(moderator, "lobby"); kindOf(t, err) != Forbidden {
		t.Errorf("listing bans where the handler does not moderate: %v, want Forbidden", err)
	}
	if err := s.Unban(stranger, "lobby", "x"); kindOf(t, err) != Unauthenticated {
		t.Errorf("lifting a ban without identity: %v, want Unauthenticated", err)
	}
}

// TestTooManyBans: a room that holds the most bans allowed refuses one
// more as a conflict, too_many_bans, until one is lifted.
func TestTooManyBans(t *testing.T) {
	t.Parallel()
	m := rooms.New(rooms.Config{MaxBans: 2})
	t.Cleanup(func() { _ = m.Close() })
	s := New(m, Config{Moderate: true, MaxMessageSize: 100})
	first, err := s.Ban(moderator, "lobby", BanRequest{User: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ban(moderator, "lobby", BanRequest{User: "b"}); err != nil {
		t.Fatal(err)
	}
	if e := refusal(t, func() error { _, err := s.Ban(moderator, "lobby", BanRequest{User: "c"}); return err }()); e.Kind != Conflict || e.Reason != "too_many_bans" {
		t.Fatalf("a ban past the room's bans: %+v, want Conflict, too_many_bans", e)
	}
	if err := s.Unban(moderator, "lobby", first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ban(moderator, "lobby", BanRequest{User: "c"}); err != nil {
		t.Fatalf("a ban after one was lifted: %v", err)
	}
}

// TestBlockedWords: a post containing a blocked word, however it is
// spelled in case, spacing or invisible code points, is refused as
// blocked_word and stored nowhere; others pass.
func TestBlockedWords(t *testing.T) {
	t.Parallel()
	words, err := blocklist.New([]string{"spam", "buy now"})
	if err != nil {
		t.Fatal(err)
	}
	s := newService(t, Config{BlockWords: words})
	for _, text := range []string{"spam", "SPAM here", "s\u200bpam", "BUY   now!"} {
		if e := refusal(t, post(s, stranger, "lobby", text)); e.Kind != Forbidden || e.Reason != "blocked_word" {
			t.Errorf("a post of %q: %+v, want Forbidden, blocked_word", text, e)
		}
	}
	if err := post(s, stranger, "lobby", "spammers buy nowhere"); err != nil {
		t.Fatalf("a post without a blocked word: %v", err)
	}
	if rep, _ := s.History(Caller{}, "lobby", "", "", 10); len(rep.Messages) != 1 {
		t.Fatalf("%d messages stored, want the clean one alone", len(rep.Messages))
	}
}

// TestMountModeratorsBanInTheirRoomsOnly: a mount's moderators ban in
// every room only where every room is theirs: not from a mount with a
// room allowlist, nor where some rooms are private, which have no
// moderators but their token's; a token's "*" grant still may.
func TestMountModeratorsBanInTheirRoomsOnly(t *testing.T) {
	mod := Caller{User: "mod", Addr: "192.0.2.9"}
	for name, cfg := range map[string]Config{
		"an allowlist":  {Moderate: true, Rooms: []string{"lobby"}},
		"private rooms": {Moderate: true, Private: NewPrivateRooms("team-*")},
	} {
		s := newService(t, cfg)
		if _, err := s.Ban(mod, rooms.AllRooms, BanRequest{User: "bob"}); kindOf(t, err) != Forbidden {
			t.Errorf("with %s, a mount's moderator bans in every room: %v, want Forbidden", name, err)
		}
		if _, err := s.Bans(mod, rooms.AllRooms); kindOf(t, err) != Forbidden {
			t.Errorf("with %s, a mount's moderator lists the bans of every room: %v, want Forbidden", name, err)
		}
	}
	s := newService(t, Config{Moderate: true, Private: NewPrivateRooms("team-*")})
	star := Caller{User: "carol", UserByToken: true, Grants: &token.Grants{Moderate: rooms.Patterns{"*"}}}
	if _, err := s.Ban(star, rooms.AllRooms, BanRequest{User: "bob"}); err != nil {
		t.Errorf("a token moderator of \"*\" bans in every room: %v", err)
	}
	if _, err := newService(t, Config{Moderate: true}).Ban(mod, rooms.AllRooms, BanRequest{User: "bob"}); err != nil {
		t.Errorf("a mount's moderator, every room public and served: %v", err)
	}
}
func TestBlockedWordInName(t *testing.T) {
	words, err := blocklist.New([]string{"casino"})
	if err != nil {
		t.Fatal(err)
	}
	s := newService(t, Config{BlockWords: words})
	_, err = s.Submit(context.Background(), stranger, Post{Room: "lobby", User: "CASINO deals", Message: "hello"})
	if kind, reason := refusalOf(t, err); kind != Forbidden || reason != "blocked_word" {
		t.Errorf("a post named with a blocked word: %v, want Forbidden blocked_word", err)
	}
	if _, err := s.Submit(context.Background(), stranger, Post{Room: "lobby", User: "sam", Message: "hello"}); err != nil {
		t.Errorf("a post with neither: %v", err)
	}
}
