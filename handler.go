package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/ratelimit"
	"github.com/caddy-chat/caddy-chat/rooms"
)

// Defaults of the chat handler.
const (
	DefaultMaxMessageSize      = 4 << 10
	DefaultMaxStreamsPerClient = 256
	// DefaultMaxNewRoomsPerClient is how many rooms one client may make by
	// posting within newRoomsWindow. Without a bound, one anonymous client
	// could fill max_rooms with posts to made-up names, and every other
	// new room would be refused until those idled out.
	DefaultMaxNewRoomsPerClient = 100
	newRoomsWindow              = time.Hour
	// bodyOverhead is what a body may carry besides the message: field
	// names, room, user, and JSON escapes, which can take six bytes for one.
	bodyOverhead = 4 << 10
)

// Handler serves chat under the path it is mounted at: SSE streams, the
// submit API, room listings and history. Requests for other paths go to the
// next handler.
type Handler struct {
	// Serve the HTML pages. Default: true.
	UI *bool `json:"ui,omitempty"`
	// Serve the gRPC API, chat.v1.ChatService, to gRPC, gRPC-Web and
	// Connect clients at /chat.v1.ChatService/<Method>. Default: false.
	GRPC bool `json:"grpc,omitempty"`
	// A placeholder, such as {http.auth.user.id}, naming the author. When it
	// resolves to a non-empty value, it is the author, the message is marked
	// verified, and the user given in the request is ignored.
	Identity string `json:"identity,omitempty"`
	// Refuse posts (401) when Identity resolves empty: every author is
	// verified.
	IdentityRequired bool `json:"identity_required,omitempty"`
	// Refuse (403) an unverified post under a name that a verified author
	// has posted under in the room, through any handler. Default: true.
	ReserveNames *bool `json:"reserve_names,omitempty"`
	// Largest message, in bytes. Default: 4 KiB.
	MaxMessageSize int64 `json:"max_message_size,omitempty"`
	// Largest request body, in bytes. Default: six times the message size
	// (room for JSON escapes) plus 4 KiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`
	// When set, only these rooms exist for this handler.
	Rooms []string `json:"rooms,omitempty"`
	// Allow DELETE /room/{room}. Protect it with matchers and auth first.
	AllowDelete bool `json:"allow_delete,omitempty"`
	// Posts per author per window; the author is the identity when one
	// resolves, else the client IP (an IPv6 client by its /64).
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// Streams one client may have open at once through this handler; the
	// client is the identity when one resolves, else the client IP (an
	// IPv6 client by its /64). Default: 256.
	MaxStreamsPerClient int `json:"max_streams_per_client,omitempty"`
	// Rooms one client may make by posting, per hour; the client is keyed
	// as for MaxStreamsPerClient. Default: 100.
	MaxNewRoomsPerClient int `json:"max_new_rooms_per_client,omitempty"`
	// Origins (scheme://host[:port]) whose pages may use this chat: CORS
	// answers for them, and their posts pass the cross-site check. Without
	// any, the chat is same-origin only.
	AllowOrigins []string `json:"allow_origins,omitempty"`

	app     *App
	origins map[string]bool
	allowed map[string]bool
	limiter *windowLimit // nil without rate_limit
	created *windowLimit // new rooms per client
	streams *ratelimit.Counter
	csrf    *http.CrossOriginProtection
	rpc     *http.ServeMux // the gRPC API, with GRPC on
	logger  *zap.Logger
	// accessLog is Caddy's access logger, http.log.access, with the logs
	// of the config that its named loggers, the sites' log directives,
	// write to; streams write their entries there (see accessEntry).
	accessLog *zap.Logger
}

// RateLimit is a number of posts allowed in a window.
type RateLimit struct {
	Posts  int            `json:"posts"`
	Window caddy.Duration `json:"window"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.chat",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and connects the handler to the chat app.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.accessLog = ctx.Logger(new(caddyhttp.App)).Named("log.access")
	if h.UI == nil {
		h.UI = new(bool)
		*h.UI = true
	}
	if h.ReserveNames == nil {
		h.ReserveNames = new(bool)
		*h.ReserveNames = true
	}
	if h.MaxMessageSize == 0 {
		h.MaxMessageSize = DefaultMaxMessageSize
	}
	if h.MaxBodySize == 0 {
		h.MaxBodySize = 6*h.MaxMessageSize + bodyOverhead
	}
	if len(h.Rooms) > 0 {
		h.allowed = make(map[string]bool, len(h.Rooms))
		for _, name := range h.Rooms {
			h.allowed[name] = true
		}
	}
	if h.MaxNewRoomsPerClient == 0 {
		h.MaxNewRoomsPerClient = DefaultMaxNewRoomsPerClient
	}
	if h.MaxStreamsPerClient == 0 {
		h.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	h.streams = ratelimit.NewCounter(h.MaxStreamsPerClient)
	h.csrf = http.NewCrossOriginProtection()
	if len(h.AllowOrigins) > 0 {
		h.origins = make(map[string]bool, len(h.AllowOrigins))
		for _, origin := range h.AllowOrigins {
			if err := h.csrf.AddTrustedOrigin(origin); err != nil {
				return fmt.Errorf("allow_origins: %w", err)
			}
			h.origins[origin] = true
		}
	}
	app, err := ctx.App("chat")
	if err != nil {
		return fmt.Errorf("loading chat app: %w", err)
	}
	h.app = app.(*App)
	// With store redis these count on every node at once.
	if h.RateLimit != nil && h.RateLimit.Posts > 0 {
		h.limiter = newWindowLimit("posts", h.RateLimit.Posts, time.Duration(h.RateLimit.Window), h.app.counter)
	}
	h.created = newWindowLimit("rooms", h.MaxNewRoomsPerClient, newRoomsWindow, h.app.counter)
	if h.GRPC {
		h.rpc = h.newRPC()
	}
	return nil
}

// Validate checks the room allowlist, identity, sizes and rate limit.
func (h *Handler) Validate() error {
	var errs []error
	for _, name := range h.Rooms {
		if !rooms.ValidName(name) {
			errs = append(errs, fmt.Errorf("rooms: %q: %w", name, rooms.ErrInvalidName))
		}
	}
	if h.IdentityRequired && h.Identity == "" {
		errs = append(errs, errors.New("identity_required needs an identity placeholder"))
	}
	if h.MaxMessageSize < 0 {
		errs = append(errs, errors.New("max_message_size must be positive"))
	}
	if h.MaxBodySize < h.MaxMessageSize {
		errs = append(errs, fmt.Errorf("max_body_size (%d) must be at least max_message_size (%d)", h.MaxBodySize, h.MaxMessageSize))
	}
	if rl := h.RateLimit; rl != nil && (rl.Posts <= 0 || rl.Window <= 0) {
		errs = append(errs, errors.New("rate_limit needs a positive number of posts and a positive window"))
	}
	if h.MaxNewRoomsPerClient < 0 {
		errs = append(errs, errors.New("max_new_rooms_per_client must be positive"))
	}
	if h.MaxStreamsPerClient < 0 {
		errs = append(errs, errors.New("max_streams_per_client must be positive"))
	}
	return errors.Join(errs...)
}

// ServeHTTP routes the paths the handler owns, relative to where it is
// mounted, and passes every other path to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.rpc != nil {
		if _, pattern := h.rpc.Handler(r); pattern != "" {
			if !h.cors(w, r, rpcCORS) {
				h.serveRPC(w, r)
			}
			return nil
		}
	}
	route, room, ok := parsePath(r.URL.EscapedPath())
	if !ok || !*h.UI && pageRoutes[route] {
		return next.ServeHTTP(w, r)
	}
	if h.cors(w, r, restCORS) {
		return nil
	}
	err := h.serve(w, r, route, room)
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		h.reject(r, apiErr)
		apiErr.write(w)
		return nil
	}
	return err
}

// corsPolicy is what the CORS answers of one API allow and expose.
// Credentials are never allowed: a page on another site posts as an
// unverified author, never with the chat site's cookies.
type corsPolicy struct {
	methods, headers, expose string
}

var (
	// restCORS is for the REST API and streams. Last-Event-ID is sent by an
	// EventSource that reconnects by itself.
	restCORS = corsPolicy{
		methods: "GET, POST",
		headers: "Content-Type, Idempotency-Key, Last-Event-ID",
		expose:  "Retry-After",
	}
	// rpcCORS is for the gRPC API, which browsers call with gRPC-Web or the
	// Connect protocol: the headers their clients send, and those that carry
	// a call's status where a page's script may read them.
	rpcCORS = corsPolicy{
		methods: "POST",
		headers: "Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, Grpc-Timeout, X-Grpc-Web, X-User-Agent",
		expose:  "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Retry-After",
	}
)

// corsMaxAge is how long a browser may keep a preflight's answer.
const corsMaxAge = "600"

// cors lets pages of the allowed origins read what the handler serves, and
// answers their preflight requests, reporting whether it did. Answers vary
// by Origin only when there are origins to allow.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request, policy corsPolicy) (answered bool) {
	if h.origins == nil {
		return false
	}
	hdr := w.Header()
	hdr.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if !h.origins[origin] {
		return false
	}
	hdr.Set("Access-Control-Allow-Origin", origin)
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		hdr.Set("Access-Control-Expose-Headers", policy.expose)
		return false
	}
	hdr.Set("Access-Control-Allow-Methods", policy.methods)
	hdr.Set("Access-Control-Allow-Headers", policy.headers)
	hdr.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}

// reject counts and logs a refusal of r, from any adapter.
func (h *Handler) reject(r *http.Request, apiErr *apiError) {
	reason := apiErr.reason()
	rejectedTotal.WithLabelValues(reason).Inc()
	if apiErr.cause != nil {
		h.logger.Error("request failed", zap.String("path", r.URL.Path), zap.Error(apiErr.cause))
	}
	h.logger.Debug("request rejected",
		zap.Int("status", apiErr.status),
		zap.String("reason", reason),
		zap.String("error", apiErr.message),
		zap.String("path", r.URL.Path))
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, route, room string) error {
	switch route {
	case routeStream:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.serveStream(w, r, room)
	case routeSubmit:
		if r.Method != http.MethodPost {
			return methodNotAllowed("POST")
		}
		return h.serveSubmit(w, r, "")
	case routeRooms:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.serveRooms(w)
	case routeMessages:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.serveMessages(w, r, room)
	case routePresence:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.servePresence(w, room)
	case routeRoom:
		switch r.Method {
		case http.MethodGet:
			if *h.UI {
				return h.serveRoomPage(w, r, room)
			}
		case http.MethodPost:
			return h.serveSubmit(w, r, room)
		case http.MethodDelete:
			return h.serveDelete(w, r, room)
		}
		if *h.UI {
			return methodNotAllowed("GET, POST, DELETE")
		}
		return methodNotAllowed("POST, DELETE")
	case routeIndex, routeOpenRoom, routeStatic, routeWidget:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed("GET")
		}
		switch route {
		case routeIndex:
			return h.serveIndex(w)
		case routeOpenRoom:
			return h.serveOpenRoom(w, r)
		case routeWidget:
			return serveWidget(w, r)
		default:
			return serveStatic(w, r, room)
		}
	}
	return fmt.Errorf("unknown route %q", route)
}

// Routes, by their first path segment.
const (
	routeStream   = "stream"
	routeSubmit   = "submit"
	routeRooms    = "rooms"
	routeMessages = "messages"
	routePresence = "presence"
	routeRoom     = "room"
	routeIndex    = ""
	routeOpenRoom = "open"
	routeStatic   = "static"
	routeWidget   = "widget.js"
)

// pageRoutes are served only with the UI on; without it they belong to the
// next handler.
var pageRoutes = map[string]bool{routeIndex: true, routeOpenRoom: true, routeStatic: true, routeWidget: true}

// parsePath matches an escaped path against the routes the handler owns; for
// the static route, room is the file name. The room segment is unescaped only after the path is split, so an encoded slash
// stays inside the room name, where the name check refuses it.
func parsePath(escaped string) (route, room string, ok bool) {
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	switch {
	case len(segs) == 1 && (segs[0] == routeSubmit || segs[0] == routeRooms || segs[0] == routeIndex || segs[0] == routeWidget):
		return segs[0], "", true
	case len(segs) == 1 && segs[0] == routeRoom:
		return routeOpenRoom, "", true
	case len(segs) == 2 && (segs[0] == routeStream || segs[0] == routeRoom || segs[0] == routeStatic):
		route = segs[0]
	case len(segs) == 3 && segs[0] == routeRooms && (segs[2] == routeMessages || segs[2] == routePresence):
		route = segs[2]
	default:
		return "", "", false
	}
	room, err := url.PathUnescape(segs[1])
	if err != nil {
		room = segs[1] // not a valid room name either; the name check says so
	}
	return route, room, true
}

// checkRoom refuses an invalid name (400) or one outside the allowlist (403).
func (h *Handler) checkRoom(name string) error {
	if !rooms.ValidName(name) {
		return badRequest(rooms.ErrInvalidName.Error())
	}
	if h.allowed != nil && !h.allowed[name] {
		return &apiError{status: http.StatusForbidden, message: fmt.Sprintf("room %q is not open here", name)}
	}
	return nil
}

func (h *Handler) serveRooms(w http.ResponseWriter) error {
	return writeJSON(w, http.StatusOK, struct {
		Rooms []rooms.RoomInfo `json:"rooms"`
	}{h.roomList()})
}

// roomList is the rooms this handler serves: all of them, or with an
// allowlist, exactly the allowed ones, whether they exist yet or not.
func (h *Handler) roomList() []rooms.RoomInfo {
	list := h.app.manager.Rooms()
	if h.allowed != nil {
		byName := make(map[string]rooms.RoomInfo, len(list))
		for _, info := range list {
			byName[info.Name] = info
		}
		list = list[:0]
		for _, name := range h.Rooms {
			info, ok := byName[name]
			if !ok {
				info = rooms.RoomInfo{Name: name}
			}
			list = append(list, info)
		}
	}
	return list
}

// Limits of GET /rooms/{room}/messages.
const (
	defaultMessagesLimit = 50
	maxMessagesLimit     = 1000
)

func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request, room string) error {
	q := r.URL.Query()
	limit := defaultMessagesLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return badRequest(limitProblem)
		}
		limit = n
	}
	rep, err := h.history(room, q.Get("after"), limit)
	if err != nil {
		return err
	}
	if rep.Messages == nil {
		rep.Messages = []rooms.Message{}
	}
	// oldest comes with every reset, "" when nothing is kept, as in the
	// stream's reset event. more: the answer reached the replay byte cap
	// before limit; the rest follows the last message returned.
	var oldest *string
	if rep.Reset {
		oldest = &rep.Oldest
	}
	return writeJSON(w, http.StatusOK, struct {
		Messages []rooms.Message `json:"messages"`
		Reset    bool            `json:"reset,omitempty"`
		Oldest   *string         `json:"oldest,omitempty"`
		More     bool            `json:"more,omitempty"`
	}{rep.Messages, rep.Reset, oldest, rep.Truncated})
}

// limitProblem refuses a history limit, from either adapter.
var limitProblem = fmt.Sprintf("limit must be a whole number from 1 to %d", maxMessagesLimit)

// history reads up to limit retained messages of room after the id after,
// for every adapter.
func (h *Handler) history(room, after string, limit int) (rooms.Replay, error) {
	if err := h.checkRoom(room); err != nil {
		return rooms.Replay{}, err
	}
	if limit < 1 || limit > maxMessagesLimit {
		return rooms.Replay{}, badRequest(limitProblem)
	}
	rep, err := h.app.manager.Messages(room, after, limit)
	if err != nil {
		return rooms.Replay{}, roomsError(err)
	}
	return rep, nil
}

func (h *Handler) serveDelete(w http.ResponseWriter, r *http.Request, room string) error {
	if err := h.deleteRoom(r, room); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteRoom deletes room for r, where allow_delete is on, for every
// adapter.
func (h *Handler) deleteRoom(r *http.Request, room string) error {
	if !h.AllowDelete {
		return &apiError{status: http.StatusForbidden, message: "deleting rooms is not allowed here"}
	}
	if err := h.csrf.Check(r); err != nil {
		return crossSite()
	}
	if err := h.checkRoom(room); err != nil {
		return err
	}
	if err := h.app.manager.Delete(room); err != nil {
		return roomsError(err)
	}
	h.logger.Info("room deleted", zap.String("room", room))
	return nil
}

// apiError is a refusal the client can act on, sent as {"error": message}.
type apiError struct {
	status     int
	message    string
	allow      string        // for 405
	retryAfter time.Duration // for 429 and 503
	label      string        // the metrics reason, when the status alone is too coarse
	cause      error         // for the log, when the operator must act
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.message) }

// reasons label rejected requests in metrics, by status.
var reasons = map[int]string{
	http.StatusBadRequest:            "bad_request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not_found",
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusRequestEntityTooLarge: "too_large",
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusConflict:              "key_reused",
	http.StatusTooManyRequests:       "rate_limited",
	http.StatusServiceUnavailable:    "capacity",
}

func (e *apiError) reason() string {
	if e.label != "" {
		return e.label
	}
	return reasons[e.status]
}

func (e *apiError) write(w http.ResponseWriter) {
	if e.allow != "" {
		w.Header().Set("Allow", e.allow)
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", e.retryAfterSeconds())
	}
	_ = writeJSON(w, e.status, struct {
		Error string `json:"error"`
	}{e.message})
}

// retryAfterSeconds is the wait in whole seconds, rounded up, as
// Retry-After writes it.
func (e *apiError) retryAfterSeconds() string {
	return strconv.Itoa(int((e.retryAfter + time.Second - 1) / time.Second))
}

func badRequest(message string) error {
	return &apiError{status: http.StatusBadRequest, message: message}
}

func methodNotAllowed(allow string) error {
	return &apiError{status: http.StatusMethodNotAllowed, message: "method not allowed; use " + allow, allow: allow}
}

func crossSite() error {
	return &apiError{status: http.StatusForbidden, message: "cross-site request refused", label: "cross_site"}
}

// capacityRetry is the Retry-After sent when a capacity limit is reached.
const capacityRetry = 5 * time.Second

// roomsError turns a rooms error into a response.
func roomsError(err error) error {
	switch {
	case errors.Is(err, rooms.ErrInvalidName):
		return badRequest(err.Error())
	case errors.Is(err, rooms.ErrNotFound):
		return &apiError{status: http.StatusNotFound, message: err.Error()}
	case errors.Is(err, rooms.ErrKeyReused):
		return &apiError{status: http.StatusConflict, message: err.Error()}
	case errors.Is(err, rooms.ErrNameReserved):
		return &apiError{status: http.StatusForbidden, message: err.Error(), label: "name_reserved"}
	case errors.Is(err, rooms.ErrClosed):
		return &apiError{status: http.StatusServiceUnavailable, message: err.Error(), retryAfter: capacityRetry, label: "stopping"}
	case errors.Is(err, rooms.ErrTooManyRooms), errors.Is(err, rooms.ErrTooManySubscribers):
		return &apiError{status: http.StatusServiceUnavailable, message: err.Error(), retryAfter: capacityRetry}
	case errors.Is(err, rooms.ErrUnavailable):
		// The details name the store's file: they are for the log.
		return &apiError{status: http.StatusServiceUnavailable, message: rooms.ErrUnavailable.Error(), retryAfter: capacityRetry, label: "store_unavailable", cause: err}
	}
	return err
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	var body []byte
	var err error
	if m, ok := v.(json.Marshaler); ok {
		// json.Marshal would parse and compact what the value wrote
		// again: for a message, the answer of every submit, that is
		// a good part of the encoding's cost.
		body, err = m.MarshalJSON()
	} else {
		body, err = json.Marshal(v)
	}
	if err != nil {
		return fmt.Errorf("encoding response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, err = w.Write(append(body, '\n'))
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
