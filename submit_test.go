package chat

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddy-chat/caddy-chat/service"
)

func TestDecodeSubmission(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		want        submission
		wantStatus  int
	}{
		{"json", "application/json", `{"room":"r","user":"u","message":"m"}`, submission{Room: "r", User: "u", Message: "m"}, 0},
		{"json with charset", "application/json; charset=utf-8", `{"message":"m"}`, submission{Message: "m"}, 0},
		{"json trailing space", "application/json", "{\"message\":\"m\"}\n ", submission{Message: "m"}, 0},
		{"form", "application/x-www-form-urlencoded", "room=r&user=u&message=a+b%0A", submission{Room: "r", User: "u", Message: "a b\n", form: true}, 0},
		{"empty json body", "application/json", "", submission{}, 400},
		{"json null", "application/json", "null", submission{}, 0},
		{"json two objects", "application/json", `{}{}`, submission{}, 400},
		{"json nested", "application/json", `{"room":` + strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat(`}`, 20000) + `}`, submission{}, 400},
		{"json unknown field", "application/json", `{"rooms":"r"}`, submission{}, 400},
		{"json wrong type", "application/json", `{"message":["m"]}`, submission{}, 400},
		{"json invalid utf-8", "application/json", "{\"message\":\"\xc3\x28\"}", submission{}, 400},
		{"form repeated field", "application/x-www-form-urlencoded", "message=a&message=b", submission{}, 400},
		{"form unknown field", "application/x-www-form-urlencoded", "message=a&admin=1", submission{}, 400},
		{"form bad escape", "application/x-www-form-urlencoded", "message=%zz", submission{}, 400},
		{"form invalid utf-8", "application/x-www-form-urlencoded", "user=%C3%28&message=a", submission{}, 400},
		{"too large", "application/json", `{"message":"` + strings.Repeat("x", 200) + `"}`, submission{}, 413},
		{"plain text", "text/plain", "hi", submission{}, 415},
		{"missing type", "", "hi", submission{}, 415},
		{"malformed type", "application/json; =", "{}", submission{}, 415},
		{"multipart", "multipart/form-data; boundary=x", "--x--", submission{}, 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{}
			if tt.contentType != "" {
				header.Set("Content-Type", tt.contentType)
			}
			limit := int64(128)
			if strings.HasPrefix(tt.name, "json nested") {
				limit = 1 << 20
			}
			got, err := decodeSubmission(header, strings.NewReader(tt.body), limit)
			if tt.wantStatus != 0 {
				var refused *service.Error
				if !errors.As(err, &refused) || refusals[refused.Kind].status != tt.wantStatus {
					t.Fatalf("error %v, want status %d", err, tt.wantStatus)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzDecodeSubmission: no body, JSON or form, makes the decoder panic, and
// whatever it accepts is valid UTF-8 within the size limit.
func FuzzDecodeSubmission(f *testing.F) {
	for _, seed := range []struct{ ctype, body string }{
		{"application/json", `{"room":"r","user":"u","message":"m"}`},
		{"application/json", `{"message":"\u0000\ud800"}`},
		{"application/json", `[[[[[[`},
		{"application/x-www-form-urlencoded", "room=r&message=%FF%00&user=a%0D%0Ab"},
		{"application/x-www-form-urlencoded; charset=\"", "a=b"},
		{"text/plain", "message=x"},
	} {
		f.Add(seed.ctype, seed.body)
	}
	f.Fuzz(func(t *testing.T, ctype, body string) {
		header := http.Header{"Content-Type": {ctype}}
		s, err := decodeSubmission(header, strings.NewReader(body), 1024)
		if err != nil {
			var refused *service.Error
			if !errors.As(err, &refused) {
				t.Fatalf("error without a status: %v", err)
			}
			return
		}
		for _, v := range []string{s.Room, s.User, s.Message} {
			if !utf8.ValidString(v) || len(v) > 1024 {
				t.Fatalf("accepted %q", v)
			}
		}
	})
}
