// Command hookreceiver is the local receiver that the benchmarks point the
// chat's hooks at (bench/run.sh's -webhook and -screen scenarios). It
// verifies each call's signature, as a receiver should, answers a webhook's
// batch 204 and a screen call {"action":"allow"}, and counts what it was
// sent, so that chatbench -receiver can tell how many events per second one
// webhook delivered. The secret comes from the environment, as the
// Caddyfile's does:
//
//	CHAT_HOOK_SECRET=whsec_... hookreceiver -addr 127.0.0.1:8093
//
// POST /webhook takes a batch, POST /screen a post, and GET /count answers
// the counts so far: {"events":..,"batches":..,"screened":..,"rejected":..},
// rejected being the calls whose signature did not verify (answered 401).
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/caddy-chat/caddy-chat/hooks"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8093", "listen address")
	flag.Parse()
	secret, err := hooks.ParseSecret(os.Getenv("CHAT_HOOK_SECRET"))
	if err != nil {
		log.Fatalf("CHAT_HOOK_SECRET: %v", err)
	}
	log.Printf("hookreceiver listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, newReceiver(secret).routes()))
}

// maxBody bounds a call's body: a batch of 1,000 events of the largest
// messages fits.
const maxBody = 64 << 20

// counts are what the receiver was sent, as GET /count answers them.
type counts struct {
	Events   int64 `json:"events"`
	Batches  int64 `json:"batches"`
	Screened int64 `json:"screened"`
	Rejected int64 `json:"rejected"`
}

// receiver verifies and counts the hooks' calls.
type receiver struct {
	secret                              hooks.Secret
	events, batches, screened, rejected atomic.Int64
}

func newReceiver(secret hooks.Secret) *receiver {
	return &receiver{secret: secret}
}

func (rc *receiver) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", rc.webhook)
	mux.HandleFunc("POST /screen", rc.screen)
	mux.HandleFunc("GET /count", rc.count)
	return mux
}

// verified reads the call's body and checks its signature; a call that
// fails is answered, and counted as rejected.
func (rc *receiver) verified(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	if err := rc.secret.Verify(r.Header, body, time.Now()); err != nil {
		rc.rejected.Add(1)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return nil, false
	}
	return body, true
}

func (rc *receiver) webhook(w http.ResponseWriter, r *http.Request) {
	body, ok := rc.verified(w, r)
	if !ok {
		return
	}
	var batch struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		http.Error(w, "not a batch: "+err.Error(), http.StatusBadRequest)
		return
	}
	rc.events.Add(int64(len(batch.Events)))
	rc.batches.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) screen(w http.ResponseWriter, r *http.Request) {
	if _, ok := rc.verified(w, r); !ok {
		return
	}
	rc.screened.Add(1)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"action":"allow"}`)
}

func (rc *receiver) count(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(counts{
		Events:   rc.events.Load(),
		Batches:  rc.batches.Load(),
		Screened: rc.screened.Load(),
		Rejected: rc.rejected.Load(),
	})
}
