package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-chat/caddy-chat/ratelimit"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// defaultUser is the author of a message that names none.
const defaultUser = "anonymous"

// maxUserLen is the longest user name, in characters.
const maxUserLen = 64

// submission is a decoded submit request.
type submission struct {
	Room    string `json:"room"`
	User    string `json:"user"`
	Message string `json:"message"`
	form    bool
}

// decodeSubmission reads a submit body, JSON or form, of at most maxBody
// bytes. It checks the encoding and the shape, not the values.
func decodeSubmission(header http.Header, body io.Reader, maxBody int64) (submission, error) {
	ctype, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil && header.Get("Content-Type") != "" {
		return submission{}, unsupportedType()
	}
	if ctype != "application/json" && ctype != "application/x-www-form-urlencoded" {
		return submission{}, unsupportedType()
	}
	raw, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		return submission{}, fmt.Errorf("reading request body: %w", err)
	}
	if int64(len(raw)) > maxBody {
		return submission{}, &apiError{status: http.StatusRequestEntityTooLarge, message: fmt.Sprintf("request body is over %d bytes", maxBody)}
	}
	if ctype == "application/json" {
		// encoding/json would quietly replace invalid UTF-8.
		if !utf8.Valid(raw) {
			return submission{}, badRequest("body is not valid UTF-8")
		}
		var s submission
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return submission{}, badRequest("malformed JSON: " + jsonProblem(err))
		}
		if _, err := dec.Token(); err != io.EOF {
			return submission{}, badRequest("malformed JSON: data after the object")
		}
		return s, nil
	}
	values, err := url.ParseQuery(string(raw))
	if err != nil {
		return submission{}, badRequest("malformed form body")
	}
	for key, vs := range values {
		if key != "room" && key != "user" && key != "message" {
			return submission{}, badRequest(fmt.Sprintf("unknown field %q", key))
		}
		if len(vs) > 1 {
			return submission{}, badRequest(fmt.Sprintf("field %q given more than once", key))
		}
		if !utf8.ValidString(vs[0]) {
			return submission{}, badRequest(fmt.Sprintf("field %q is not valid UTF-8", key))
		}
	}
	return submission{Room: values.Get("room"), User: values.Get("user"), Message: values.Get("message"), form: true}, nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q must be a string", typeErr.Field)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	if errors.Is(err, io.EOF) {
		return "empty body"
	}
	return "not a JSON object of strings"
}

func unsupportedType() error {
	return &apiError{status: http.StatusUnsupportedMediaType, message: "send application/json or application/x-www-form-urlencoded"}
}

// validUser reports whether name is 1-64 printable characters, not all of
// them blank or invisible: a page would show no name.
func validUser(name string) bool {
	if name == "" || utf8.RuneCountInString(name) > maxUserLen {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return rooms.FoldName(name) != ""
}

// checkMessage refuses an empty or oversized message, and control characters
// other than tab and line breaks: a NUL or an escape sequence has no place in
// a chat line and only ever arrives to break something.
func (h *Handler) checkMessage(text string) error {
	switch {
	case text == "":
		return badRequest("message is missing or empty")
	case int64(len(text)) > h.MaxMessageSize:
		return &apiError{status: http.StatusRequestEntityTooLarge, message: fmt.Sprintf("message is over %d bytes", h.MaxMessageSize)}
	case strings.ContainsFunc(text, func(r rune) bool { return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' }):
		return badRequest("message contains control characters")
	}
	return nil
}

// validIdempotencyKey reports whether key is 1-64 visible ASCII characters.
func validIdempotencyKey(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// serveSubmit posts a message: to pathRoom for POST /room/{room}, else to
// the room named in the body.
func (h *Handler) serveSubmit(w http.ResponseWriter, r *http.Request, pathRoom string) error {
	if err := h.csrf.Check(r); err != nil {
		return crossSite()
	}
	author, err := h.author(r)
	if err != nil {
		return err
	}
	in, err := decodeSubmission(r.Header, r.Body, h.MaxBodySize)
	if err != nil {
		return err
	}
	if pathRoom != "" {
		if in.Room != "" && in.Room != pathRoom {
			return badRequest("the body names another room than the path")
		}
		in.Room = pathRoom
	}
	_, keyGiven := r.Header["Idempotency-Key"]
	msg, repeat, err := h.submit(r, author, in, r.Header.Get("Idempotency-Key"), keyGiven)
	if err != nil {
		return err
	}
	if in.form && acceptsHTML(r) {
		// A browser posting without script: back to the room page, by a
		// path relative to this one so that any mount point works.
		location := url.PathEscape(in.Room)
		if pathRoom == "" {
			location = "room/" + location
		}
		w.Header().Set("Location", location)
		w.WriteHeader(http.StatusSeeOther)
		return nil
	}
	status := http.StatusCreated
	if repeat {
		status = http.StatusOK
	}
	return writeJSON(w, status, msg)
}

// verifiedAuthor is who posts, as the identity placeholder names them.
type verifiedAuthor struct {
	name     string
	verified bool
}

// author resolves who posts r, refusing (401) an unverified author where
// identity_required is on. Every adapter asks it before reading the body.
func (h *Handler) author(r *http.Request) (verifiedAuthor, error) {
	name, verified := h.identity(r)
	if h.IdentityRequired && !verified {
		return verifiedAuthor{}, &apiError{status: http.StatusUnauthorized, message: "sign in to post here"}
	}
	return verifiedAuthor{name, verified}, nil
}

// submit checks a decoded submission and posts it: the one path every
// adapter's posts take, so that they share validation, names, keys and
// limits. keyGiven tells an empty idempotency key, which is refused, from
// none. repeat is set when the key named a message already stored.
func (h *Handler) submit(r *http.Request, author verifiedAuthor, in submission, key string, keyGiven bool) (msg rooms.Message, repeat bool, err error) {
	if err := h.checkRoom(in.Room); err != nil {
		return rooms.Message{}, false, err
	}
	if author.verified {
		in.User = author.name
	} else if in.User == "" {
		in.User = defaultUser
	}
	if !validUser(in.User) {
		return rooms.Message{}, false, badRequest("user must be 1-64 printable characters")
	}
	if err := h.checkMessage(in.Message); err != nil {
		return rooms.Message{}, false, err
	}
	if keyGiven && !validIdempotencyKey(key) {
		return rooms.Message{}, false, badRequest("Idempotency-Key must be 1-64 visible ASCII characters")
	}
	client := h.clientKey(r)
	post := rooms.Post{
		User: in.User, Text: in.Message, Verified: author.verified,
		Key: key, Scope: client, ReserveNames: *h.ReserveNames,
	}
	if !author.verified {
		// Behind one address there may be many people, each naming
		// themselves: their keys are theirs.
		post.Scope += "\x00" + in.User
	}
	if h.limiter != nil {
		refuse := func(retry time.Duration) error {
			return &apiError{status: http.StatusTooManyRequests, message: "too many posts; slow down", retryAfter: retry}
		}
		if h.limiter.shared == nil {
			// Asked after the repeat lookup: a retry of a stored
			// message is answered, never refused.
			post.Admit = func() error { return h.limiter.check(r.Context(), client, refuse) }
		} else {
			// The count, a round trip to the shared store, is taken
			// before the room's lock, where it would hold up the
			// room's other submits, and after the key is looked up
			// across the nodes: a retry is answered, not counted.
			if msg, repeat, err = h.app.manager.Repeat(in.Room, post); err != nil || repeat {
				return msg, repeat, roomsError(err)
			}
			if err := h.limiter.check(r.Context(), client, refuse); err != nil {
				// A twin under the same key, stored since the
				// lookup, is still answered: a keyed post past
				// the limit is refused once it is known to
				// repeat no stored message.
				var refused *apiError
				if key == "" || !errors.As(err, &refused) {
					return rooms.Message{}, false, roomsError(err)
				}
				post.Admit = func() error { return err }
			}
		}
	}
	post.Create = func() error {
		return h.created.check(r.Context(), client, func(retry time.Duration) error {
			return &apiError{status: http.StatusTooManyRequests, retryAfter: retry, label: "too_many_rooms",
				message: fmt.Sprintf("this client has made %d new rooms within the hour, the most allowed; post to an existing room", h.MaxNewRoomsPerClient)}
		})
	}
	msg, repeat, err = h.app.manager.Submit(in.Room, post)
	if err != nil {
		return rooms.Message{}, false, roomsError(err)
	}
	return msg, repeat, nil
}

// identity resolves the configured identity placeholder for r.
func (h *Handler) identity(r *http.Request) (string, bool) {
	if h.Identity == "" || fromOtherOrigin(r) {
		return "", false
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return "", false
	}
	id := repl.ReplaceAll(h.Identity, "")
	return id, id != ""
}

// fromOtherOrigin reports whether a browser sent r from a page of another
// origin (one that allow_origins let through). Such a request may carry the
// chat site's cookies or credentials without its author meaning to post
// here, so it never speaks for a signed-in user.
func fromOtherOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	return err != nil || !strings.EqualFold(u.Host, r.Host)
}

// clientKey names who sent r, for limits per client: the identity when it
// resolves, else the client address as Caddy determined it, trusted proxies
// considered, an IPv6 client by its /64. The prefixes keep an identity that
// looks like an address apart from that address.
func (h *Handler) clientKey(r *http.Request) string {
	if id, ok := h.identity(r); ok {
		return "id:" + id
	}
	ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if !ok || ip == "" {
		ip = r.RemoteAddr
	}
	return "ip:" + ratelimit.AddrKey(ip)
}

func acceptsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
