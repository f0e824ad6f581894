package sse

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestAppendEventRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string // what a client reads back; CR and CRLF become LF
	}{
		{"plain", `{"message":"hi"}`, `{"message":"hi"}`},
		{"empty", "", ""},
		{"LF", "a\nb", "a\nb"},
		{"CRLF", "a\r\nb", "a\nb"},
		{"lone CR", "a\rb", "a\nb"},
		{"forged field", "x\n\nid: 9\ndata: evil", "x\n\nid: 9\ndata: evil"},
		{"forged data line", "data: y", "data: y"},
		{"trailing newline", "a\n", "a\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := AppendEvent(nil, Event{ID: "e1-1", Name: "message", Data: []byte(tt.data)})
			frame = AppendEvent(frame, Event{ID: "e1-2", Name: "message", Data: []byte("next")})
			r := NewReader(bytes.NewReader(frame))
			got, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != "e1-1" || got.Name != "message" || got.Data != tt.want {
				t.Errorf("first event = %+v, want id e1-1, data %q", got, tt.want)
			}
			got, err = r.Next()
			if err != nil || got.ID != "e1-2" || got.Data != "next" {
				t.Errorf("second event = %+v, %v; the first one's data broke the framing", got, err)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("after two events: %v, want EOF", err)
			}
		})
	}
}

func TestReaderRules(t *testing.T) {
	stream := "\xEF\xBB\xBF: hello\r\nretry: 1500\r\n\r\nid: a\revent: x\rdata: 1\r\rdata:2\ndata\n\n: ping\n\ndata: no terminator"
	r := NewReader(strings.NewReader(stream))
	want := []Received{{ID: "a", Name: "x", Data: "1"}, {ID: "a", Name: "message", Data: "2\n"}}
	for i, w := range want {
		got, err := r.Next()
		if err != nil || got != w {
			t.Fatalf("event %d = %+v, %v; want %+v", i, got, err, w)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("unterminated event: %v, want EOF", err)
	}
	if r.Retry != 1500 || r.Comments != 2 {
		t.Errorf("Retry=%d Comments=%d, want 1500 and 2", r.Retry, r.Comments)
	}
}

func TestComments(t *testing.T) {
	got := string(AppendRetry(AppendComment(nil, "ping"), 1000))
	if want := ": ping\n\nretry: 1000\n\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzRoundTrip checks that no payload can change the framing: whatever the
// data, a client reads back exactly one event with the same id and the data
// with its line endings normalised to LF.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "a", "\r\n", "\n\nid: 9\n\n", "data: x\r", "\x00", "\xEF\xBB\xBF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		frame := AppendEvent(nil, Event{ID: "e-1", Name: "message", Data: []byte(data)})
		r := NewReader(bytes.NewReader(frame))
		got, err := r.Next()
		if err != nil {
			t.Fatalf("no event read back: %v", err)
		}
		want := strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
		if got.ID != "e-1" || got.Name != "message" || got.Data != want {
			t.Fatalf("got %+v, want data %q", got, want)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("a second event appeared: %v", err)
		}
	})
}

func BenchmarkReader(b *testing.B) {
	var buf []byte
	data := []byte(`{"id":"x-1","message":"` + strings.Repeat("x", 8192) + `"}`)
	for range 100 {
		buf = AppendEvent(buf, Event{ID: "x-1", Name: "message", Data: data})
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(buf))
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
}
