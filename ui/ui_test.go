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
