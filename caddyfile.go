package chat

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-chat/caddy-chat/rooms"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("chat", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("chat", parseHandlerDirective)
	// After encode, so that auth directives, which come before encode, run
	// first and the identity placeholder is set when chat reads it.
	httpcaddyfile.RegisterDirectiveOrder("chat", httpcaddyfile.After, "encode")
}

// parseGlobalOption sets up the chat app from the global option:
//
//	chat {
//	    history         <n>
//	    buffer          <n>
//	    heartbeat       <duration>
//	    max_rooms       <n>
//	    max_subscribers <n>
//	    idle_timeout    <duration>
//	    store           memory|file [<path>]|redis <url> {
//	        prefix   <prefix>
//	        sentinel <master> [<addr...>]
//	        cluster  [<addr...>]
//	    }
//	    webhook         <url> { ... }
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "chat", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the chat global option.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		option := d.Val()
		switch option {
		case "history":
			n, err := intArg(d, option)
			if err != nil {
				return err
			}
			a.History = &n
		case "buffer":
			n, err := positiveIntArg(d, option)
			if err != nil {
				return err
			}
			a.Buffer = n
		case "max_rooms":
			n, err := positiveIntArg(d, option)
			if err != nil {
				return err
			}
			a.MaxRooms = n
		case "max_subscribers":
			n, err := positiveIntArg(d, option)
			if err != nil {
				return err
			}
			a.MaxSubscribers = n
		case "heartbeat":
			dur, err := durationArg(d, option)
			if err != nil {
				return err
			}
			if dur == 0 {
				return d.Errf("heartbeat must be positive")
			}
			a.Heartbeat = dur
		case "idle_timeout":
			dur, err := durationArg(d, option)
			if err != nil {
				return err
			}
			a.IdleTimeout = &dur
		case "store":
			if !d.NextArg() {
				return d.ArgErr()
			}
			store := &StoreConfig{Backend: d.Val()}
			switch {
			case store.Backend != StoreMemory && store.Backend != StoreFile && store.Backend != StoreRedis:
				return d.Errf("store: want %s, %s or %s, got %q", StoreMemory, StoreFile, StoreRedis, store.Backend)
			case store.Backend == StoreFile && d.NextArg():
				store.Path = d.Val()
			case store.Backend == StoreRedis:
				if !d.NextArg() {
					return d.Errf("store redis: want a server URL, such as redis://localhost:6379/0")
				}
				store.URL = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if err := store.unmarshalRedisOption(d); err != nil {
					return err
				}
			}
			a.Store = store
		case "webhook":
			c, err := unmarshalWebhook(d)
			if err != nil {
				return err
			}
			a.Webhooks = append(a.Webhooks, c)
		default:
			return d.Errf("unknown chat option %q", option)
		}
	}
	return nil
}

// unmarshalRedisOption reads one option of the store block, which only
// the redis store has:
//
//	prefix   <prefix>
//	sentinel <master> [<addr...>]
//	cluster  [<addr...>]
func (store *StoreConfig) unmarshalRedisOption(d *caddyfile.Dispenser) error {
	option := d.Val()
	if store.Backend != StoreRedis {
		return d.Errf("store %s: unknown option %q", store.Backend, option)
	}
	args := d.RemainingArgs()
	switch option {
	case "prefix":
		if len(args) != 1 {
			return d.ArgErr()
		}
		store.Prefix = args[0]
	case "sentinel":
		if len(args) == 0 {
			return d.Errf("store redis: sentinel needs the name of the master")
		}
		store.Sentinel = &SentinelConfig{Master: args[0], Addrs: args[1:]}
	case "cluster":
		store.Cluster = &ClusterConfig{Addrs: args}
	default:
		return d.Errf("store redis: unknown option %q", option)
	}
	if store.Sentinel != nil && store.Cluster != nil {
		return d.Errf("store redis: sentinel and cluster exclude each other")
	}
	return nil
}

func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return handler, nil
}

// UnmarshalCaddyfile reads the chat directive:
//
//	chat [<matcher>] {
//	    ui               [on|off]
//	    grpc             [on|off]
//	    identity         <placeholder> [required]
//	    reserve_names    [on|off]
//	    max_message_size <size>
//	    max_body_size    <size>
//	    rooms            <name...>
//	    allow_delete
//	    moderate
//	    edit_window      <duration>
//	    rate_limit       <posts> <window>
//	    max_streams_per_client <n>
//	    max_new_rooms_per_client <n>
//	    allow_origins    <origin...>
//	    block_words      <word...>
//	    block_words_file <path>
//	    token {
//	        key         hs256|rs256|es256|eddsa <secret or PEM file>
//	        jwks        <https URL>
//	        jwks_ca     <PEM file>
//	        issuer      <iss>
//	        audience    <aud>
//	        user_claim  <claim>
//	        rooms_claim <claim>
//	        from        header|cookie:<name>|query:<name>...
//	        token_url   <URL of the site's token endpoint>
//	    }
//	    private          <room pattern...>
//	    screen           <url> { ... }
//	    webhook          <url> { ... }
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "ui":
			on, err := onOffArg(d, sub)
			if err != nil {
				return err
			}
			h.UI = on
		case "grpc":
			on, err := onOffArg(d, sub)
			if err != nil {
				return err
			}
			h.GRPC = *on
		case "identity":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Identity = d.Val()
			if d.NextArg() {
				if d.Val() != "required" {
					return d.Errf("identity: want required or nothing after the placeholder, got %q", d.Val())
				}
				h.IdentityRequired = true
			}
		case "reserve_names":
			on, err := onOffArg(d, sub)
			if err != nil {
				return err
			}
			h.ReserveNames = on
		case "max_message_size":
			size, err := sizeArg(d, sub)
			if err != nil {
				return err
			}
			h.MaxMessageSize = size
		case "max_body_size":
			size, err := sizeArg(d, sub)
			if err != nil {
				return err
			}
			h.MaxBodySize = size
		case "rooms":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			for _, name := range names {
				if !rooms.ValidName(name) {
					return d.Errf("rooms: %q: %v", name, rooms.ErrInvalidName)
				}
			}
			h.Rooms = append(h.Rooms, names...)
		case "allow_delete":
			h.AllowDelete = true
		case "moderate":
			h.Moderate = true
		case "edit_window":
			window, err := durationArg(d, sub)
			if err != nil {
				return err
			}
			h.EditWindow = &window
		case "allow_origins":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return d.ArgErr()
			}
			h.AllowOrigins = append(h.AllowOrigins, origins...)
		case "block_words":
			words := d.RemainingArgs()
			if len(words) == 0 {
				return d.ArgErr()
			}
			h.BlockWords = append(h.BlockWords, words...)
		case "block_words_file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.BlockWordsFile = d.Val()
		case "rate_limit":
			posts, err := positiveIntArg(d, sub)
			if err != nil {
				return err
			}
			window, err := durationArg(d, sub)
			if err != nil {
				return err
			}
			if window == 0 {
				return d.Errf("rate_limit: the window must be positive")
			}
			h.RateLimit = &RateLimit{Posts: posts, Window: window}
		case "max_streams_per_client":
			n, err := positiveIntArg(d, sub)
			if err != nil {
				return err
			}
			h.MaxStreamsPerClient = n
		case "max_new_rooms_per_client":
			n, err := positiveIntArg(d, sub)
			if err != nil {
				return err
			}
			h.MaxNewRoomsPerClient = n
		case "token":
			if h.Token != nil {
				return d.Err("token: only one token block")
			}
			h.Token = new(TokenConfig)
			if err := h.Token.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "private":
			patterns := d.RemainingArgs()
			if len(patterns) == 0 {
				return d.ArgErr()
			}
			for _, pattern := range patterns {
				if !rooms.ValidPattern(pattern) {
					return d.Errf("private: %q is not a room pattern: the characters of a name, * and ?", pattern)
				}
			}
			h.Private = append(h.Private, patterns...)
		case "screen":
			if h.Screen != nil {
				return d.Err("screen: a handler has one screen")
			}
			c, err := unmarshalScreen(d)
			if err != nil {
				return err
			}
			h.Screen = c
		case "webhook":
			c, err := unmarshalWebhook(d)
			if err != nil {
				return err
			}
			h.Webhooks = append(h.Webhooks, c)
		default:
			return d.Errf("unknown chat subdirective %q", sub)
		}
		if d.NextArg() {
			return d.Errf("%s: unexpected argument %q", sub, d.Val())
		}
	}
	return nil
}

// unmarshalCaddyfile reads the token block of the chat directive.
func (t *TokenConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		args := d.RemainingArgs()
		one := func(dst *string) error {
			if len(args) != 1 {
				return d.Errf("token: %s: want one value", option)
			}
			*dst = args[0]
			return nil
		}
		var err error
		switch option {
		case "key":
			if len(args) != 2 {
				return d.Errf("token: key: want an algorithm (hs256, rs256, es256, eddsa) and a secret or a PEM file")
			}
			t.Alg, t.Key = args[0], args[1]
		case "jwks":
			err = one(&t.JWKS)
		case "jwks_ca":
			err = one(&t.JWKSCA)
		case "issuer":
			err = one(&t.Issuer)
		case "audience":
			err = one(&t.Audience)
		case "user_claim":
			err = one(&t.UserClaim)
		case "rooms_claim":
			err = one(&t.RoomsClaim)
		case "token_url":
			err = one(&t.TokenURL)
		case "from":
			if len(args) == 0 {
				return d.ArgErr()
			}
			t.From = append(t.From, args...)
		default:
			return d.Errf("token: unknown option %q", option)
		}
		if err != nil {
			return err
		}
	}
	return t.validate()
}

// onOffArg reads the next argument, on or off. A bare option means on, as
// allow_delete written alone does.
func onOffArg(d *caddyfile.Dispenser, option string) (*bool, error) {
	on := true
	if !d.NextArg() {
		return &on, nil
	}
	on = d.Val() == "on"
	if !on && d.Val() != "off" {
		return nil, d.Errf("%s: want on or off, got %q", option, d.Val())
	}
	return &on, nil
}

// intArg reads the next argument as a whole number, 0 or more.
func intArg(d *caddyfile.Dispenser, option string) (int, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 0 {
		return 0, d.Errf("%s: want a whole number, 0 or more, got %q", option, d.Val())
	}
	return n, nil
}

// positiveIntArg reads the next argument as a whole number, 1 or more.
func positiveIntArg(d *caddyfile.Dispenser, option string) (int, error) {
	n, err := intArg(d, option)
	if err == nil && n == 0 {
		return 0, d.Errf("%s: must be 1 or more", option)
	}
	return n, err
}

// durationArg reads the next argument as a duration, 0 or more.
func durationArg(d *caddyfile.Dispenser, option string) (caddy.Duration, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur < 0 {
		return 0, d.Errf("%s: want a duration such as 15s or 1h, 0 or more, got %q", option, d.Val())
	}
	return caddy.Duration(dur), nil
}

// sizeArg reads the next argument as a size in bytes, such as 4KiB.
func sizeArg(d *caddyfile.Dispenser, option string) (int64, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	size, err := humanize.ParseBytes(d.Val())
	if err != nil || size == 0 || size > 1<<40 {
		return 0, d.Errf("%s: want a positive size such as 4KiB, got %q", option, d.Val())
	}
	return int64(size), nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
