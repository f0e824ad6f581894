package chat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/caddy-chat/caddy-chat/service"
	"github.com/caddy-chat/caddy-chat/token"
)

// refusal is how both adapters answer one kind of refusal.
type refusal struct {
	status int          // over HTTP
	code   connect.Code // over gRPC
	reason string       // the metrics label, unless the error names its own
}

// refusals is the one table of what each kind of refusal is answered with.
var refusals = map[service.Kind]refusal{
	service.Invalid:          {http.StatusBadRequest, connect.CodeInvalidArgument, "bad_request"},
	service.Unauthenticated:  {http.StatusUnauthorized, connect.CodeUnauthenticated, "unauthorized"},
	service.Forbidden:        {http.StatusForbidden, connect.CodePermissionDenied, "forbidden"},
	service.NotFound:         {http.StatusNotFound, connect.CodeNotFound, "not_found"},
	service.MethodNotAllowed: {http.StatusMethodNotAllowed, connect.CodeUnimplemented, "method_not_allowed"},
	service.TooLarge:         {http.StatusRequestEntityTooLarge, connect.CodeResourceExhausted, "too_large"},
	service.UnsupportedType:  {http.StatusUnsupportedMediaType, connect.CodeInvalidArgument, "unsupported_media_type"},
	service.Conflict:         {http.StatusConflict, connect.CodeFailedPrecondition, "key_reused"},
	service.RateLimited:      {http.StatusTooManyRequests, connect.CodeResourceExhausted, "rate_limited"},
	service.Capacity:         {http.StatusServiceUnavailable, connect.CodeResourceExhausted, "capacity"},
	service.Unavailable:      {http.StatusServiceUnavailable, connect.CodeUnavailable, "unavailable"},
}

// reasonOf is the label e is counted under in metrics.
func reasonOf(e *service.Error) string {
	if e.Reason != "" {
		return e.Reason
	}
	return refusals[e.Kind].reason
}

// badRequest refuses bad input.
func badRequest(message string) error { return service.Refuse(service.Invalid, message) }

// methodNotAllowed refuses a method the route does not take.
func methodNotAllowed(allow string) error {
	return &service.Error{Kind: service.MethodNotAllowed, Message: "method not allowed; use " + allow, Allow: allow}
}

// reject counts and logs a refusal of r, from either adapter.
func (h *Handler) reject(r *http.Request, e *service.Error) {
	reason := reasonOf(e)
	rejectedTotal.WithLabelValues(reason).Inc()
	if e.Cause != nil {
		h.logger.Error("request failed", zap.String("path", r.URL.Path), zap.Error(e.Cause))
	}
	h.logger.Debug("request rejected",
		zap.Int("status", refusals[e.Kind].status),
		zap.String("reason", reason),
		zap.String("error", e.Message),
		zap.String("path", r.URL.Path))
}

// writeRefusal answers a refusal over HTTP: its status, with Allow,
// Retry-After and WWW-Authenticate where it has them, and {"error":
// message}, with the refusal's reason where it names its own ("banned",
// "blocked_word", "token_expired"), for a page to tell the person what to
// do, and what failed or the room where it says.
func writeRefusal(w http.ResponseWriter, e *service.Error) {
	if e.Allow != "" {
		w.Header().Set("Allow", e.Allow)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.RetryAfter))
	}
	if challenge := bearerChallenge(e); challenge != "" {
		w.Header().Set("WWW-Authenticate", challenge)
	}
	_ = writeJSON(w, refusals[e.Kind].status, struct {
		Error  string `json:"error"`
		Reason string `json:"reason,omitempty"`
		Why    string `json:"why,omitempty"`
		Room   string `json:"room,omitempty"`
	}{e.Message, e.Reason, e.Why, e.Room})
}

// bearerChallenge is the WWW-Authenticate header of a refused token, as
// RFC 6750 has it, "" for any other refusal.
func bearerChallenge(e *service.Error) string {
	switch token.Reason(e.Reason) {
	case token.Missing:
		return `Bearer realm="chat"`
	case token.Expired, token.Invalid:
		return fmt.Sprintf(`Bearer realm="chat", error="invalid_token", error_description=%q`, e.Message)
	}
	return ""
}

// retryAfterSeconds is a wait in whole seconds, rounded up, as Retry-After
// writes it.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int((d + time.Second - 1) / time.Second))
}

// rpcError turns a refusal into a connect error with a readable message, and
// with a wait, where there is one, as a RetryInfo detail and a Retry-After
// header. It counts and logs it as ServeHTTP does an HTTP refusal. Other
// errors are returned as they are.
func (h *Handler) rpcError(ctx context.Context, err error) error {
	var e *service.Error
	if !errors.As(err, &e) {
		return err
	}
	h.reject(callOf(ctx).r, e)
	code := connect.CodeUnknown
	if answer, ok := refusals[e.Kind]; ok {
		code = answer.code
	}
	cerr := connect.NewError(code, errors.New(e.Message))
	if e.Reason != "" {
		// What a client acts on, as the JSON's reason over HTTP.
		info := &errdetails.ErrorInfo{Reason: e.Reason, Domain: "caddy-chat", Metadata: map[string]string{}}
		if e.Why != "" {
			info.Metadata["why"] = e.Why
		}
		if e.Room != "" {
			info.Metadata["room"] = e.Room
		}
		if detail, err := connect.NewErrorDetail(info); err == nil {
			cerr.AddDetail(detail)
		}
	}
	if e.RetryAfter > 0 {
		cerr.Meta().Set("Retry-After", retryAfterSeconds(e.RetryAfter))
		if detail, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)}); err == nil {
			cerr.AddDetail(detail)
		}
	}
	return cerr
}
