package ui

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRoomDays: the server-rendered list has a separator naming the UTC day
// before its first message and wherever the UTC date changes, and nowhere
// else.
func TestRoomDays(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// What the list shows, in order: a day as its date, a message as its id.
	entry := regexp.MustCompile(`<li class="day"><time datetime="([^"]+)">([^<]*)</time>|<li data-id="([^"]+)"`)
	for _, tc := range []struct {
		name  string
		times []string
		want  string
	}{
		{"empty", nil, ""},
		{"one", []string{"2025-01-02T14:03:00Z"}, "2025-01-02 Thursday, 2 January 2025 (UTC),m0"},
		{"same day", []string{"2025-01-02T00:00:00Z", "2025-01-02T23:59:59.999Z"}, "2025-01-02 Thursday, 2 January 2025 (UTC),m0,m1"},
		{"next day", []string{"2025-01-02T23:59:59.999Z", "2025-01-03T00:00:00Z", "2025-01-03T08:00:00Z"},
			"2025-01-02 Thursday, 2 January 2025 (UTC),m0,2025-01-03 Friday, 3 January 2025 (UTC),m1,m2"},
		// A time in another zone is rendered by its UTC date.
		{"offset", []string{"2025-01-02T08:00:00+09:00", "2025-01-02T10:00:00+09:00"},
			"2025-01-01 Wednesday, 1 January 2025 (UTC),m0,2025-01-02 Thursday, 2 January 2025 (UTC),m1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := Room{Name: "lobby"}
			for i, s := range tc.times {
				data.Messages = append(data.Messages, Message{ID: fmt.Sprint("m", i), User: "u", Text: "t", Time: at(s)})
			}
			var b strings.Builder
			if err := RenderRoom(&b, data); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range entry.FindAllStringSubmatch(b.String(), -1) {
				if m[3] != "" {
					got = append(got, m[3])
				} else {
					got = append(got, m[1]+" "+m[2])
				}
			}
			if s := strings.Join(got, ","); s != tc.want {
				t.Errorf("the list shows %s\nwant %s", s, tc.want)
			}
		})
	}
}

// TestRoomTellsItsScript: the room page tells its script what the reader
// may do to messages (the edit window, a moderate mount, who they are),
// and marks an edited message, with its time, without script too.
func TestRoomTellsItsScript(t *testing.T) {
	at := time.Date(2025, 1, 2, 14, 3, 0, 0, time.UTC)
	data := Room{Name: "lobby", Settings: Settings{Moderate: true, EditWindow: 900, Identity: "alice"}, Messages: []Message{
		{ID: "e-1", User: "bob", Text: "helo", Time: at},
		{ID: "e-2", User: "bob", Text: "hello", Time: at, Edited: at.Add(time.Minute)},
	}}
	var b strings.Builder
	if err := RenderRoom(&b, data); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`data-identity="alice"`, `data-edit-window="900" data-moderate>`,
		`<span class="edited" data-time="2025-01-02T14:04:00.000Z" title="edited 2025-01-02 14:04:00 UTC">edited</span><p class="text">hello</p>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the room page lacks %s", want)
		}
	}
	if n := strings.Count(page, `class="edited"`); n != 1 {
		t.Errorf("the room page marks %d messages edited, want 1", n)
	}
	data.Settings = Settings{}
	b.Reset()
	if err := RenderRoom(&b, data); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "data-moderate") {
		t.Error("a room page off a moderate mount says it moderates")
	}
}
