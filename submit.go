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
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/caddy-chat/caddy-chat/service"
	"github.com/caddyserver/caddy/v2"
)

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
	ctype, raw, err := readBody(header, body, maxBody, true)
	if err != nil {
		return submission{}, err
	}
	if ctype == ctypeJSON {
		var s submission
		return s, decodeJSON(raw, &s)
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

// The media types of request bodies.
const (
	ctypeJSON = "application/json"
	ctypeForm = "application/x-www-form-urlencoded"
)

// readBody reads a request body of at most maxBody bytes, JSON or, where
// forms are taken, a form, and returns its media type.
func readBody(header http.Header, body io.Reader, maxBody int64, forms bool) (string, []byte, error) {
	ctype, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil && header.Get("Content-Type") != "" || ctype != ctypeJSON && (!forms || ctype != ctypeForm) {
		return "", nil, unsupportedType(forms)
	}
	raw, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		return "", nil, fmt.Errorf("reading request body: %w", err)
	}
	if int64(len(raw)) > maxBody {
		return "", nil, service.Refuse(service.TooLarge, fmt.Sprintf("request body is over %d bytes", maxBody))
	}
	return ctype, raw, nil
}

// decodeJSON decodes a JSON object into v, refusing fields v does not
// have and anything after the object.
func decodeJSON(raw []byte, v any) error {
	// encoding/json would quietly replace invalid UTF-8.
	if !utf8.Valid(raw) {
		return badRequest("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: " + jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON: data after the object")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Type.Kind() == reflect.Bool {
			return fmt.Sprintf("field %q must be true or false", typeErr.Field)
		}
		return fmt.Sprintf("field %q must be a string", typeErr.Field)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	if errors.Is(err, io.EOF) {
		return "empty body"
	}
	return "not a JSON object of the fields the route takes"
}

// unsupportedType refuses a body in another encoding than those a route
// takes: JSON, and forms where it takes them.
func unsupportedType(forms bool) error {
	if forms {
		return service.Refuse(service.UnsupportedType, "send application/json or application/x-www-form-urlencoded")
	}
	return service.Refuse(service.UnsupportedType, "send application/json")
}

// serveSubmit posts a message: to pathRoom for POST /room/{room}, else to
// the room named in the body.
func (h *Handler) serveSubmit(w http.ResponseWriter, r *http.Request, c service.Caller, pathRoom string) error {
	if err := h.svc.MayPost(c); err != nil {
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
	posted, err := h.svc.Submit(r.Context(), c, service.Post{
		Room: in.Room, User: in.User, Message: in.Message,
		Key: r.Header.Get("Idempotency-Key"), KeyGiven: keyGiven,
	})
	if err != nil {
		return err
	}
	if in.form && acceptsHTML(r) {
		// A browser posting without script: back to the room page, by a
		// path relative to this one so that any mount point works. The
		// secret stays out of the URL, where history, logs and Referer
		// would keep it: a page without script cannot edit anyway.
		location := url.PathEscape(in.Room)
		if pathRoom == "" {
			location = "room/" + location
		}
		w.Header().Set("Location", location)
		w.WriteHeader(http.StatusSeeOther)
		return nil
	}
	status := http.StatusCreated
	if posted.Repeat {
		status = http.StatusOK
	}
	return writeJSON(w, status, postedJSON(posted))
}

// postedJSON is the answer to a submit: the message as stored, and, for
// an author without an identity, the secret that lets them edit and
// delete it (see secretHeader), which only this answer carries.
type postedJSON service.Posted

// MarshalJSON writes the message's JSON with "secret" added when there is
// one, without encoding the message twice. A secret needs no escaping
// (service.Posted).
func (p postedJSON) MarshalJSON() ([]byte, error) {
	b, err := p.Message.MarshalJSON()
	if err != nil || p.Secret == "" {
		return b, err
	}
	b = append(b[:len(b)-1], `,"secret":"`...)
	b = append(b, p.Secret...)
	return append(b, `"}`...), nil
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

func acceptsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
