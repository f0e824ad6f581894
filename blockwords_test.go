package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBlockedWordRefused: a post containing a blocked word, from the
// Caddyfile or from the words file, however it is spelled in case,
// spacing or invisible code points, is answered 403 with the reason
// blocked_word and stored nowhere: the room's stream and history never
// see it, while a clean post goes through.
func TestBlockedWordRefused(t *testing.T) {
	words := filepath.Join(t.TempDir(), "blocked.txt")
	if err := os.WriteFile(words, []byte("# gambling\ncasino\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCaddy(t, config{site: "encode gzip\n\tlog", handler: fmt.Sprintf("block_words spam \"buy now\"\n\t\tblock_words_file %s", words)})
	room := roomFor(t, "words")
	stream := openStream(t, rootSite+"/stream/"+room)
	before := metric(t, `caddy_chat_rejected_requests_total{reason="blocked_word"}`)
	texts := []string{"SPAM here", "buy\u200b  NOW", "Casino tonight"}
	for _, text := range texts {
		body, _ := json.Marshal(map[string]string{"room": room, "user": "bob", "message": text})
		r := do(t, http.MethodPost, rootSite+"/submit", string(body), "Content-Type", "application/json")
		if r.status != http.StatusForbidden || r.json["reason"] != "blocked_word" || r.json["error"] == "" {
			t.Errorf("a post of %q: %d %s, want 403 with reason blocked_word", text, r.status, r.body)
		}
	}
	if got := metric(t, `caddy_chat_rejected_requests_total{reason="blocked_word"}`) - before; got != float64(len(texts)) {
		t.Errorf("blocked_word counted %v times, want %d", got, len(texts))
	}
	postJSON(t, rootSite, room, "bob", "spammers class")
	if got := stream.messages(t, 1); got[0].Message != "spammers class" {
		t.Errorf("the stream got %q first, want the clean post", got[0].Message)
	}
	stream.quiet(t, 200*time.Millisecond)
	if got := history(t, room); got != "bob:spammers class:false" {
		t.Errorf("history %s, want the clean post alone", got)
	}
}

// TestBlockedWordsFileMissing: a words file that cannot be read refuses
// the config, naming the subdirective and the file.
func TestBlockedWordsFileMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.txt")
	refusesToLoad(t, config{handler: "block_words_file " + missing}, "a missing words file", "block_words_file: reading blocked words: open "+missing)
}
