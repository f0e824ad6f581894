package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/blocklist"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/service"
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
	// Make the callers of this handler whose Identity resolves
	// moderators: they delete any message, and ban and unban authors
	// through the ban routes and RPCs. Put the site's auth in front of
	// the handler; Identity is required.
	Moderate bool `json:"moderate,omitempty"`
	// How long authors may edit and delete their own messages after
	// posting them; 0 turns author edits off. Default: 15m.
	EditWindow *caddy.Duration `json:"edit_window,omitempty"`
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
	// Words that refuse (403) a message containing one, compared as names
	// are: letter case, spacing and invisible code points do not hide
	// one. A word matches whole words, except in scripts written without
	// spaces.
	BlockWords []string `json:"block_words,omitempty"`
	// A file of more such words, one a line; blank lines and lines
	// beginning with # are left out. It is read when the config loads.
	BlockWordsFile string `json:"block_words_file,omitempty"`
	// Sign-in by the site's own tokens (JWTs): their user is the author,
	// verified, and their rooms claim grants private rooms. The identity,
	// when it resolves, wins over the token's user.
	Token *TokenConfig `json:"token,omitempty"`
	// Patterns of the rooms, such as team-*, that need a token's read
	// grant to read (streams, history, presence, the listing) and its
	// post grant to post to, on every chat handler of the config: a
	// handler without a token refuses them.
	Private []string `json:"private,omitempty"`
	// The site's own code, asked about each post and edit before it is
	// stored; see docs/hooks.md.
	Screen *ScreenConfig `json:"screen,omitempty"`
	// Where the events of the handler's rooms are POSTed: those of its
	// allowlist, or of every room without one; see docs/hooks.md.
	Webhooks []*WebhookConfig `json:"webhooks,omitempty"`

	app     *App
	svc     *service.Service
	origins map[string]bool
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
	if h.MaxNewRoomsPerClient == 0 {
		h.MaxNewRoomsPerClient = DefaultMaxNewRoomsPerClient
	}
	if h.MaxStreamsPerClient == 0 {
		h.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	if h.EditWindow == nil {
		h.EditWindow = new(caddy.Duration)
		*h.EditWindow = caddy.Duration(service.DefaultEditWindow)
	}
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
	cfg := service.Config{
		Rooms:                h.Rooms,
		IdentityRequired:     h.IdentityRequired,
		ReserveNames:         *h.ReserveNames,
		AllowDelete:          h.AllowDelete,
		Moderate:             h.Moderate,
		EditWindow:           time.Duration(*h.EditWindow),
		MaxMessageSize:       h.MaxMessageSize,
		MaxStreamsPerClient:  h.MaxStreamsPerClient,
		MaxNewRoomsPerClient: h.MaxNewRoomsPerClient,
		NewRoomsWindow:       newRoomsWindow,
		// With store redis, the limits count on every node at once.
		Counter:        h.app.counter,
		CounterTimeout: redisCallTimeout,
	}
	if h.RateLimit != nil {
		cfg.RatePosts, cfg.RateWindow = h.RateLimit.Posts, time.Duration(h.RateLimit.Window)
	}
	if cfg.BlockWords, err = h.blockList(); err != nil {
		return err
	}
	if h.Token != nil {
		if err := h.Token.provision(h.logger); err != nil {
			return err
		}
	}
	// Private on every handler of the config, which all serve the same
	// rooms: one without a token refuses them.
	h.app.private.Add(h.Private...)
	cfg.Private = h.app.private
	if h.Screen != nil {
		if cfg.Screen, err = h.Screen.newScreen(h.app.hooks, h.logger); err != nil {
			return err
		}
	}
	for _, c := range h.Webhooks {
		w, err := c.config()
		if err != nil {
			return err
		}
		if len(w.Rooms) == 0 {
			w.Rooms = h.Rooms
		}
		if err := h.app.webhooks.add(w); err != nil {
			return err
		}
	}
	h.svc = service.New(h.app.manager, cfg)
	if h.GRPC {
		h.rpc = h.newRPC()
	}
	return nil
}

// blockList folds the blocked words, with those of the file, once for
// every message; nil when there are none.
func (h *Handler) blockList() (*blocklist.List, error) {
	words := h.BlockWords
	if h.BlockWordsFile != "" {
		more, err := blocklist.ReadFile(h.BlockWordsFile)
		if err != nil {
			return nil, fmt.Errorf("block_words_file: %w", err)
		}
		words = append(slices.Clip(words), more...)
	}
	list, err := blocklist.New(words)
	if err != nil {
		return nil, fmt.Errorf("block_words: %w", err)
	}
	if list.Len() > 0 {
		h.logger.Info("blocking words", zap.Int("words", list.Len()))
	}
	return list, nil
}

// Validate checks the room allowlist, identity, moderation, sizes and
// rate limit.
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
	if h.Moderate && h.Identity == "" {
		// Without an identity no caller could be told apart from another,
		// and a ban by a nameless moderator could not be audited.
		errs = append(errs, errors.New("moderate needs an identity placeholder: moderators are the callers whose identity resolves"))
	}
	if h.EditWindow != nil && *h.EditWindow < 0 {
		errs = append(errs, errors.New("edit_window must be 0 or more"))
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
	for _, pattern := range h.Private {
		if !rooms.ValidPattern(pattern) {
			errs = append(errs, fmt.Errorf("private: %q is not a room pattern: the characters of a name, * and ?", pattern))
		}
	}
	if h.Token == nil && len(h.Private) > 0 {
		errs = append(errs, errors.New("private needs a token block: without tokens, nobody could read those rooms"))
	}
	return errors.Join(errs...)
}

// Cleanup releases the token's JWKS fetcher.
func (h *Handler) Cleanup() error {
	if h.Token != nil {
		return h.Token.cleanup()
	}
	return nil
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
	route, room, id, ok := parsePath(r.URL.EscapedPath())
	if !ok || !*h.UI && pageRoutes[route] {
		return next.ServeHTTP(w, r)
	}
	if h.cors(w, r, restCORS) {
		return nil
	}
	err := h.serve(w, r, h.caller(r), route, room, id)
	var refused *service.Error
	if errors.As(err, &refused) {
		h.reject(r, refused)
		writeRefusal(w, refused)
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
		methods: "GET, POST, PATCH, DELETE",
		headers: "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, " + secretHeader,
		expose:  "Retry-After",
	}
	// rpcCORS is for the gRPC API, which browsers call with gRPC-Web or the
	// Connect protocol: the headers their clients send, and those that carry
	// a call's status where a page's script may read them.
	rpcCORS = corsPolicy{
		methods: "POST",
		headers: "Authorization, Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, Grpc-Timeout, X-Grpc-Web, X-User-Agent",
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

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, c service.Caller, route, room, id string) error {
	switch route {
	case routeMessage:
		switch r.Method {
		case http.MethodPatch:
			return h.serveEditMessage(w, r, c, room, id)
		case http.MethodDelete:
			return h.serveDeleteMessage(w, r, c, room, id)
		}
		return methodNotAllowed("PATCH, DELETE")
	case routeBans:
		switch r.Method {
		case http.MethodGet:
			return h.serveBans(w, c, room)
		case http.MethodPost:
			return h.servePutBan(w, r, c, room)
		}
		return methodNotAllowed("GET, POST")
	case routeBan:
		if r.Method != http.MethodDelete {
			return methodNotAllowed("DELETE")
		}
		return h.serveLiftBan(w, c, room, id)
	case routeStream:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.serveStream(w, r, c, room)
	case routeSubmit:
		if r.Method != http.MethodPost {
			return methodNotAllowed("POST")
		}
		return h.serveSubmit(w, r, c, "")
	case routeRooms:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.serveRooms(w, c)
	case routeMessages:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.serveMessages(w, r, c, room)
	case routePresence:
		if r.Method != http.MethodGet {
			return methodNotAllowed("GET")
		}
		return h.servePresence(w, c, room)
	case routeRoom:
		switch r.Method {
		case http.MethodGet:
			if *h.UI {
				return h.serveRoomPage(w, r, c, room)
			}
		case http.MethodPost:
			return h.serveSubmit(w, r, c, room)
		case http.MethodDelete:
			return h.serveDelete(w, c, room)
		}
		if *h.UI {
			return methodNotAllowed("GET, POST, DELETE")
		}
		return methodNotAllowed("POST, DELETE")
	case routeIndex, routeOpenRoom, routeStatic, routeWidget, routeConfig:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed("GET")
		}
		switch route {
		case routeIndex:
			return h.serveIndex(w, c)
		case routeOpenRoom:
			return h.serveOpenRoom(w, r)
		case routeWidget:
			return serveWidget(w, r)
		case routeConfig:
			return h.serveConfig(w, r)
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
	routeMessage  = "message" // one message, to edit or delete
	routeBans     = "bans"    // of a room: list and put
	routeBan      = "ban"     // one ban, to lift
	routeIndex    = ""
	routeOpenRoom = "open"
	routeStatic   = "static"
	routeWidget   = "widget.js"
	routeConfig   = "config" // what the widget may offer its reader
)

// pageRoutes are served only with the UI on; without it they belong to the
// next handler.
var pageRoutes = map[string]bool{routeIndex: true, routeOpenRoom: true, routeStatic: true, routeWidget: true, routeConfig: true}

// parsePath matches an escaped path against the routes the handler owns; for
// the static route, room is the file name, and for the routes of one
// message and of one ban, id is the message's or the ban's. The room
// segment is unescaped only after the path is split, so an encoded slash
// stays inside the room name, where the name check refuses it.
func parsePath(escaped string) (route, room, id string, ok bool) {
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	switch {
	case len(segs) == 1 && (segs[0] == routeSubmit || segs[0] == routeRooms || segs[0] == routeIndex || segs[0] == routeWidget || segs[0] == routeConfig):
		return segs[0], "", "", true
	case len(segs) == 1 && segs[0] == routeRoom:
		return routeOpenRoom, "", "", true
	case len(segs) == 2 && (segs[0] == routeStream || segs[0] == routeRoom || segs[0] == routeStatic):
		route = segs[0]
	case len(segs) == 3 && segs[0] == routeRooms && (segs[2] == routeMessages || segs[2] == routePresence || segs[2] == routeBans):
		route = segs[2]
	case len(segs) == 4 && segs[0] == routeRooms && segs[2] == routeMessages:
		route, id = routeMessage, unescapeSegment(segs[3])
	case len(segs) == 4 && segs[0] == routeRooms && segs[2] == routeBans:
		route, id = routeBan, unescapeSegment(segs[3])
	default:
		return "", "", "", false
	}
	return route, unescapeSegment(segs[1]), id, true
}

// unescapeSegment is a path segment unescaped, or as it is when it is not
// validly escaped: no name or id is, and their checks say so.
func unescapeSegment(seg string) string {
	if s, err := url.PathUnescape(seg); err == nil {
		return s
	}
	return seg
}

func (h *Handler) serveRooms(w http.ResponseWriter, c service.Caller) error {
	list, err := h.svc.Rooms(c)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Rooms []rooms.RoomInfo `json:"rooms"`
	}{list})
}

func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request, c service.Caller, room string) error {
	q := r.URL.Query()
	limit := service.DefaultHistoryLimit
	if s := q.Get("limit"); s != "" {
		n, err := service.HistoryLimit(s)
		if err != nil {
			return err
		}
		limit = n
	}
	rep, err := h.svc.History(c, room, q.Get("after"), q.Get("before"), limit)
	if err != nil {
		return err
	}
	if rep.Messages == nil {
		rep.Messages = []rooms.Message{}
	}
	// oldest comes with every reset, "" when nothing is kept, as in the
	// stream's reset event. more: the answer reached the replay byte cap
	// before limit; the rest is past the cut. start: nothing older is kept,
	// so that a reader paging back knows it is done without asking again.
	var oldest *string
	if rep.Reset {
		oldest = &rep.Oldest
	}
	return writeJSON(w, http.StatusOK, struct {
		Messages []rooms.Message `json:"messages"`
		Reset    bool            `json:"reset,omitempty"`
		Oldest   *string         `json:"oldest,omitempty"`
		More     bool            `json:"more,omitempty"`
		Start    bool            `json:"start,omitempty"`
	}{rep.Messages, rep.Reset, oldest, rep.Truncated, rep.Start})
}

func (h *Handler) serveDelete(w http.ResponseWriter, c service.Caller, room string) error {
	if err := h.deleteRoom(c, room); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteRoom deletes room for c, for either adapter.
func (h *Handler) deleteRoom(c service.Caller, room string) error {
	if err := h.svc.Delete(c, room); err != nil {
		return err
	}
	h.logger.Info("room deleted", zap.String("room", room))
	return nil
}

// caller resolves who sent r, once for each request, for either adapter:
// the identity, the token's user and grants, the client's address as Caddy
// determined it (trusted proxies considered), and whether a browser sent it
// from another site, whose cookies sign no one in.
func (h *Handler) caller(r *http.Request) service.Caller {
	c := service.Caller{CrossSite: h.csrf.Check(r) != nil}
	if !c.CrossSite {
		c.User, _ = h.identity(r)
		if h.Token != nil {
			h.Token.signIn(r, &c)
		}
	}
	ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if !ok || ip == "" {
		ip = r.RemoteAddr
	}
	c.Addr = ip
	return c
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
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
