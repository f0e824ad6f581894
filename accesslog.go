package chat

import (
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// accessEntry is a stream's entry in its site's access log, written when
// the stream ends, in the shape of Caddy's own ("handled request", with the
// request, status, size, duration and response headers), plus the stream's
// room and why it ended. Caddy's own entry would be wrong for a stream: it
// is written when ServeHTTP returns, at once for a stream taken over from
// HTTP/1.1, and it counts only what passes its wrappers, which a stream
// written past them (see streamWriter.bypass) leaves short. So the stream
// writes this one and Caddy's is skipped.
//
// It keeps only what it logs: it outlives the request of a relayed stream.
type accessEntry struct {
	logger      *zap.Logger // Caddy's access logger, http.log.access
	names       []string    // of the loggers under it that the site's config gives the request
	level       zapcore.Level
	req         *http.Request // what LoggableHTTPRequest reads, as the request came in
	clientIP    string
	header      http.Header // the response's
	credentials bool        // log_credentials: headers that carry them are logged as they are
	userID      string
	bytesRead   int64
	start       time.Time
	room        string
}

// newAccessEntry returns the access-log entry of the stream that r opens,
// whose response head is out through w, or nil when the site's config logs
// no entry for r: it has no log directive for r's host, or log_skip
// matched r. Either way Caddy's own entry for r is skipped.
func (h *Handler) newAccessEntry(r *http.Request, w http.ResponseWriter, room string) *accessEntry {
	ctx := r.Context()
	skip, _ := caddyhttp.GetVar(ctx, caddyhttp.LogSkipVar).(bool)
	caddyhttp.SetVar(ctx, caddyhttp.LogSkipVar, true)
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if skip || srv == nil || srv.Logs == nil {
		return nil
	}
	names := accessLoggerNames(srv.Logs, r)
	if names == nil {
		return nil
	}
	e := &accessEntry{
		logger:      h.accessLog,
		names:       names,
		level:       zapcore.InfoLevel,
		header:      w.Header(),
		credentials: srv.Logs.ShouldLogCredentials,
		bytesRead:   bytesRead(r),
		start:       time.Now(),
		room:        room,
	}
	// As it came in: a handler before this one may have rewritten the URI.
	orig, _ := ctx.Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	e.req = &http.Request{
		Method:           orig.Method,
		RemoteAddr:       orig.RemoteAddr,
		RequestURI:       orig.RequestURI,
		Proto:            r.Proto,
		Host:             r.Host,
		Header:           keptHeader(r.Header, maxKeptHeader),
		TransferEncoding: r.TransferEncoding,
		TLS:              r.TLS,
	}
	e.clientIP, _ = caddyhttp.GetVar(ctx, caddyhttp.ClientIPVarKey).(string)
	if start, ok := caddyhttp.GetVar(ctx, "start_time").(time.Time); ok { // set by Caddy as the request came in
		e.start = start
	}
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		e.userID, _ = repl.GetString("http.auth.user.id")
	}
	if name, ok := caddyhttp.GetVar(ctx, caddyhttp.LogLevelVar).(string); ok {
		if level, err := zapcore.ParseLevel(name); err == nil && level >= zapcore.DebugLevel && level <= zapcore.ErrorLevel {
			e.level = level
		}
	}
	return e
}

// maxKeptHeader bounds the bytes of request headers an entry keeps for the
// life of its stream: an idle stream must not hold a client's 16 KiB of
// headers, hundreds of KiB once parsed, per stream.
const maxKeptHeader = 4 << 10

// keptHeader is a copy of h, in the order of its names, with as many of its
// fields as fit in budget bytes; a field that does not fit is left out
// whole, and so are the fields after it.
func keptHeader(h http.Header, budget int) http.Header {
	names := slices.Sorted(maps.Keys(h))
	kept := make(http.Header, len(names))
	for _, name := range names {
		for _, v := range h[name] {
			if budget -= len(name) + len(v); budget < 0 {
				return kept
			}
			kept[name] = append(kept[name], v)
		}
	}
	return kept
}

// write writes the entry of a stream that ends for err, having sent size
// bytes of body. A nil entry writes nothing.
func (e *accessEntry) write(size int64, err error) {
	if e == nil {
		return
	}
	// LoggableHTTPRequest reads the client's address from the request's
	// variables, as Caddy's proxy rules made it.
	vars := map[string]any{caddyhttp.ClientIPVarKey: e.clientIP}
	req := e.req.WithContext(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, vars))
	fields := []zap.Field{
		zap.Object("request", caddyhttp.LoggableHTTPRequest{Request: req, ShouldLogCredentials: e.credentials}),
		zap.Int64("bytes_read", e.bytesRead),
		zap.String("user_id", e.userID),
		zap.Duration("duration", time.Since(e.start)),
		zap.Int64("size", size),
		zap.Int("status", http.StatusOK),
		zap.Object("resp_headers", caddyhttp.LoggableHTTPHeader{Header: e.header, ShouldLogCredentials: e.credentials}),
		zap.String("room", e.room),
		zap.String("end", endReason(err)),
	}
	for _, name := range e.names {
		logger := e.logger
		if name != "" {
			logger = logger.Named(name)
		}
		if c := logger.Check(e.level, "handled request"); c != nil {
			c.Write(fields...)
		}
	}
}

// accessLoggerNames returns the names of the loggers under http.log.access
// that Caddy's server writes r's entry to ("" is that logger itself), or nil
// when it writes none. It is Caddy's choice, made by code that Caddy does
// not export (Server.shouldLogRequest and ServerLogConfig.wrapLogger): the
// names log_name set for r, else those of r's host, else the default.
func accessLoggerNames(logs *caddyhttp.ServerLogConfig, r *http.Request) []string {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if !logsHost(logs, host) {
		return nil
	}
	if set, ok := caddyhttp.GetVar(r.Context(), caddyhttp.AccessLoggerNameVarKey).([]any); ok {
		names := make([]string, 0, len(set))
		for _, name := range set {
			s, _ := name.(string)
			names = append(names, s)
		}
		return names
	}
	host = strings.ToLower(host) // as Caddy lowercased the names' hosts
	if names, ok := logs.LoggerNames[host]; ok {
		return names
	}
	labels := strings.Split(host, ".")
	for i := range labels {
		if labels[i] == "" {
			continue
		}
		labels[i] = "*"
		if names, ok := logs.LoggerNames[strings.Join(labels, ".")]; ok {
			return names
		}
	}
	return []string{logs.DefaultLoggerName}
}

// logsHost reports whether Caddy's server logs requests to host: a host
// given loggers is logged, then one of skip_hosts is not, then the rest
// unless only the hosts given loggers are.
func logsHost(logs *caddyhttp.ServerLogConfig, host string) bool {
	for name := range logs.LoggerNames {
		if certmagic.MatchWildcard(host, name) {
			return true
		}
	}
	for _, skipped := range logs.SkipHosts {
		if certmagic.MatchWildcard(host, skipped) {
			return false
		}
	}
	return !logs.SkipUnmappedHosts
}

// bytesRead is how much of r's body has been read, which for a stream, once
// it has started, is all it reads: a gRPC call's request (see serveRPC), and
// nothing for an event stream.
func bytesRead(r *http.Request) int64 {
	if b, ok := r.Body.(*countedBody); ok {
		return b.n
	}
	return 0
}

// countedBody counts the bytes read from a request's body.
type countedBody struct {
	io.ReadCloser
	n int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
