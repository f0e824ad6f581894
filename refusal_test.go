package chat

import (
	"net/http"
	"testing"

	"connectrpc.com/connect"

	"github.com/caddy-chat/caddy-chat/service"
)

// TestEveryKindIsAnswered: every kind of refusal has an HTTP status, a gRPC
// code and a metrics label, and a refusal the client may retry later is
// answered with a code that says so.
func TestEveryKindIsAnswered(t *testing.T) {
	for kind := service.Invalid; kind <= service.Unavailable; kind++ {
		answer, ok := refusals[kind]
		if !ok || answer.status < 400 || answer.code == 0 || answer.reason == "" {
			t.Errorf("kind %d is answered with %+v", kind, answer)
		}
	}
	if refusals[service.Unavailable].code != connect.CodeUnavailable || refusals[service.Unavailable].status != http.StatusServiceUnavailable {
		t.Errorf("Unavailable is answered %+v, want 503 and the code gRPC clients retry", refusals[service.Unavailable])
	}
	if len(refusals) != int(service.Unavailable) {
		t.Errorf("the table has %d kinds, want %d: a kind without a constant", len(refusals), service.Unavailable)
	}
}
