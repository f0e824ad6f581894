// Package chat adds room-based realtime chat to Caddy: the chat app owns the
// rooms and keeps them across config reloads, and the chat HTTP handler serves
// Server-Sent Events streams, a JSON and form submit API and a room listing.
//
// The rooms and their fan-out live in the rooms and broadcast packages, which
// know nothing of Caddy; this package adapts them to Caddy's config, lifecycle
// and HTTP handler chain.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/ratelimit"
	"github.com/caddy-chat/caddy-chat/relay"
	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/rooms/filestore"
	"github.com/caddy-chat/caddy-chat/rooms/redisstore"
	"github.com/caddy-chat/caddy-chat/service"
)

func init() {
	caddy.RegisterModule(App{})
	caddy.RegisterModule(Handler{})
}

// Defaults of the chat app.
const (
	DefaultHistory        = 1000
	DefaultBuffer         = 256
	DefaultHeartbeat      = 15 * time.Second
	DefaultMaxRooms       = 10000
	DefaultMaxSubscribers = 100000
	DefaultIdleTimeout    = time.Hour
)

// maxReplayBytes caps the JSON of the messages one stream replay or one
// history answer carries. A 4 KiB message of "<" is 24 KiB of JSON, as JSON
// escapes each "<"; without a cap, a replay of 1000 of them would hold 25 MB
// per request.
const maxReplayBytes = 1 << 20

// managers holds the room manager, with its store, across config reloads:
// every loaded config holds a reference, so history and ids outlive the
// config that made them. The key names the store: a config with another
// store gets another manager, which starts with what that store holds.
var managers = caddy.NewUsagePool()

// Store backends.
const (
	StoreMemory = "memory"
	StoreFile   = "file"
	StoreRedis  = "redis"
)

// App is the chat app: it owns the room manager shared by every chat handler
// and ends their streams when its config stops. Configure it with the chat
// global option; a config that uses the handler without it gets the defaults.
type App struct {
	// Messages kept per room for replay; 0 keeps none. Default: 1000.
	History *int `json:"history,omitempty"`
	// Events queued per subscriber; one that falls this far behind is
	// evicted and resumes from history. Default: 256.
	Buffer int `json:"buffer,omitempty"`
	// How often an idle stream gets a comment. Default: 15s.
	Heartbeat caddy.Duration `json:"heartbeat,omitempty"`
	// Rooms that may exist at once. Default: 10000.
	MaxRooms int `json:"max_rooms,omitempty"`
	// Streams that may be open at once, across all rooms. Default: 100000.
	MaxSubscribers int `json:"max_subscribers,omitempty"`
	// A room with no subscribers and no new message for this long is dropped
	// with its history; 0 never drops rooms. Default: 1h.
	IdleTimeout *caddy.Duration `json:"idle_timeout,omitempty"`
	// Where rooms' histories live. Default: memory.
	Store *StoreConfig `json:"store,omitempty"`
	// Where the events of every room are POSTed; see docs/hooks.md.
	Webhooks []*WebhookConfig `json:"webhooks,omitempty"`

	manager  *rooms.Manager
	counter  ratelimit.SharedCounter // the store's, when nodes share it; else nil
	poolKey  string
	relay    *relay.Pool
	sweeper  *sweeper              // keeps the time of the streams in the request path
	hooks    *hooks.Client         // every outbound hook call of this config
	webhooks *webhooks             // the app's and its handlers'
	private  *service.PrivateRooms // of every handler of this config
	logger   *zap.Logger
	stopCtx  context.Context // canceled when this config stops
	stopNow  context.CancelFunc
	stopOnce *sync.Once
}

// StoreConfig selects where rooms' histories, positions and idempotency keys
// live.
type StoreConfig struct {
	// "memory": they survive a reload, not a restart. "file": a bbolt
	// file; they survive a restart, and a submit is answered once its
	// message is on disk. Default: memory.
	Backend string `json:"backend,omitempty"`
	// The file store's file. Default: chat/history.db in Caddy's data
	// directory.
	Path string `json:"path,omitempty"`
	// The redis store's server: redis://[user:password@]host:port/db, or
	// rediss:// for TLS. Required with "redis".
	URL string `json:"url,omitempty"`
	// Starts the names of the redis store's keys and channels; nodes that
	// share rooms use the same. Default: "chat:".
	Prefix string `json:"prefix,omitempty"`
	// Finds the redis store's master through Redis Sentinel.
	Sentinel *SentinelConfig `json:"sentinel,omitempty"`
	// Makes the redis store a Redis Cluster.
	Cluster *ClusterConfig `json:"cluster,omitempty"`
}

// SentinelConfig finds the redis store's master through Redis Sentinel. The
// URL's host is a Sentinel, as are Addrs; its user, password, database and
// TLS apply to the master.
type SentinelConfig struct {
	// The name of the master the Sentinels monitor.
	Master string `json:"master,omitempty"`
	// More Sentinels, host:port.
	Addrs []string `json:"addrs,omitempty"`
}

// ClusterConfig makes the redis store a Redis Cluster. The URL's host is a
// node of the cluster, as are Addrs, from which the client learns the
// rest; its user, password and TLS apply to every node, and its database
// must be 0.
type ClusterConfig struct {
	// More nodes, host:port.
	Addrs []string `json:"addrs,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "chat",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision fills in defaults, takes a reference to the shared room manager
// and arranges for streams to end when this config stops.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.stopCtx, a.stopNow = context.WithCancel(context.Background())
	a.stopOnce = new(sync.Once)
	a.hooks = hooks.NewClient()
	a.webhooks = &webhooks{logger: a.logger}
	a.private = new(service.PrivateRooms)
	if a.History == nil {
		a.History = new(int)
		*a.History = DefaultHistory
	}
	if a.Buffer == 0 {
		a.Buffer = DefaultBuffer
	}
	if a.Heartbeat == 0 {
		a.Heartbeat = caddy.Duration(DefaultHeartbeat)
	}
	if a.MaxRooms == 0 {
		a.MaxRooms = DefaultMaxRooms
	}
	if a.MaxSubscribers == 0 {
		a.MaxSubscribers = DefaultMaxSubscribers
	}
	if a.IdleTimeout == nil {
		a.IdleTimeout = new(caddy.Duration)
		*a.IdleTimeout = caddy.Duration(DefaultIdleTimeout)
	}
	if a.Store == nil {
		a.Store = new(StoreConfig)
	}
	if a.Store.Backend == "" {
		a.Store.Backend = StoreMemory
	}
	if a.Store.Backend == StoreFile {
		if a.Store.Path == "" {
			a.Store.Path = filepath.Join(caddy.AppDataDir(), "chat", "history.db")
		}
		path, err := filepath.Abs(a.Store.Path)
		if err != nil {
			return fmt.Errorf("store file %s: %w", a.Store.Path, err)
		}
		a.Store.Path = path
	}
	// Caddy validates after provisioning, but the shared manager must never
	// see a bad limit, not even from a config that will be refused.
	if err := a.Validate(); err != nil {
		return err
	}
	a.webhooks.sharedStore = a.Store.Backend == StoreRedis
	for _, c := range a.Webhooks {
		cfg, err := c.config()
		if err != nil {
			return err
		}
		if err := a.webhooks.add(cfg); err != nil {
			return err
		}
	}

	// Caddy stops the HTTP servers, waiting for open requests with no time
	// limit by default, only after it emits "stopping"; streams must end on
	// the event, not on this app's Stop, which may run after the servers'.
	// This config's limits apply on "started", once every app of the config
	// has started: one that fails to start (say, a port already taken)
	// leaves the running config's limits alone.
	events, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %w", err)
	}
	for name, h := range map[string]caddyevents.Handler{"started": startedHandler{a}, "stopping": stoppingHandler{a}} {
		if err := events.(*caddyevents.App).On(name, h); err != nil {
			return fmt.Errorf("subscribing to the %s event: %w", name, err)
		}
	}

	if a.Store.Backend == StoreRedis && a.Store.Prefix == "" {
		a.Store.Prefix = redisstore.DefaultPrefix
	}
	a.poolKey = "chat " + a.Store.Backend + " " + a.Store.Path
	if a.Store.Backend == StoreRedis {
		// Another topology is another store, even with the same URL.
		topology, _ := json.Marshal([]any{a.Store.Sentinel, a.Store.Cluster})
		a.poolKey = "chat redis " + a.Store.URL + " " + a.Store.Prefix + " " + string(topology)
	}
	m, _, err := managers.LoadOrNew(a.poolKey, a.newManager)
	if err != nil {
		return fmt.Errorf("creating room manager: %w", err)
	}
	a.manager = m.(managerDestructor).Manager
	a.counter, _ = m.(managerDestructor).store.(ratelimit.SharedCounter)
	a.relay = relay.New(relay.Config{
		Writers:      runtime.GOMAXPROCS(0),
		Heartbeat:    time.Duration(a.Heartbeat),
		Ping:         pingFrame,
		WriteTimeout: writeTimeout,
	})
	a.sweeper = newSweeper(time.Duration(a.Heartbeat))
	return registerMetrics(ctx.GetMetricsRegistry(), a.manager)
}

// newManager opens the store that a.Store names and a manager on it, which
// takes back the rooms the store holds.
func (a *App) newManager() (caddy.Destructor, error) {
	cfg := a.roomsConfig()
	switch a.Store.Backend {
	case StoreRedis:
		return a.newRedisManager(cfg)
	case StoreFile:
	default:
		return managerDestructor{Manager: rooms.New(cfg)}, nil
	}
	s, err := filestore.Open(a.Store.Path)
	if err != nil {
		return nil, err
	}
	logger := a.logger
	s.OnCompactError(func(err error) {
		logger.Error("chat store: compacting after a delete failed; the deleted text stays in the file's free pages until a compaction succeeds",
			zap.String("path", s.Path()), zap.Error(err))
	})
	cfg.Store = s
	m, err := rooms.Open(context.Background(), cfg)
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	a.logger.Info("chat store opened", zap.String("path", s.Path()), zap.Int("rooms", m.Len()))
	return managerDestructor{Manager: m, store: s}, nil
}

// redisStartTimeout is how long a starting node waits for Redis to answer.
const redisStartTimeout = 5 * time.Second

// redisCallTimeout bounds each call to Redis: a Redis that accepts
// connections and never answers fails a submit with 503 after this long,
// and holds up no other room meanwhile.
const redisCallTimeout = 2 * time.Second

// newRedisManager connects to the redis store and refuses to start when it
// does not answer: a node that cannot store would refuse every submit.
func (a *App) newRedisManager(cfg rooms.Config) (caddy.Destructor, error) {
	client, where, err := a.Store.redisClient()
	if err != nil {
		return nil, err
	}
	redis.SetLogger(redisLogger{a.logger.Named("redis")})
	s := redisstore.New(client, redisstore.Options{Prefix: a.Store.Prefix, Timeout: redisCallTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("store redis %s: %w", where, err), s.Close())
	}
	// A node serves posts once it holds the bans, or a banned author's
	// posts would pass here.
	if err := s.WaitBans(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("store redis %s: %w", where, err), s.Close())
	}
	cfg.Store = s
	a.logger.Info("chat store connected", zap.String("redis", where), zap.String("prefix", a.Store.Prefix))
	return managerDestructor{Manager: rooms.New(cfg), store: s}, nil
}

// redisClient returns the client of the redis store: of one server, of the
// master that the Sentinels name, or of a cluster. where names it for
// logs and errors.
func (c *StoreConfig) redisClient() (client redis.UniversalClient, where string, err error) {
	opts, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, "", fmt.Errorf("store redis: %w", err)
	}
	// A retried script could store a message twice when only its answer
	// was lost; a submit that fails is answered 503 and retried by its
	// client with its idempotency key instead.
	opts.MaxRetries = -1
	// A call's deadline, not only the client's read timeout, ends a
	// wait for a Redis that does not answer.
	opts.ContextTimeoutEnabled = true
	if c.Sentinel == nil && c.Cluster == nil {
		return redis.NewClient(opts), fmt.Sprintf("%s:%d", opts.Addr, opts.DB), nil
	}
	u := &redis.UniversalOptions{
		Username:              opts.Username,
		Password:              opts.Password,
		DB:                    opts.DB,
		TLSConfig:             opts.TLSConfig,
		MaxRetries:            opts.MaxRetries,
		ContextTimeoutEnabled: opts.ContextTimeoutEnabled,
		DialTimeout:           opts.DialTimeout,
		ReadTimeout:           opts.ReadTimeout,
		WriteTimeout:          opts.WriteTimeout,
		PoolSize:              opts.PoolSize,
	}
	if s := c.Sentinel; s != nil {
		u.MasterName, u.Addrs = s.Master, append([]string{opts.Addr}, s.Addrs...)
		return redis.NewUniversalClient(u), fmt.Sprintf("sentinel %s %v", s.Master, u.Addrs), nil
	}
	u.IsClusterMode, u.Addrs = true, append([]string{opts.Addr}, c.Cluster.Addrs...)
	return redis.NewUniversalClient(u), fmt.Sprintf("cluster %v", u.Addrs), nil
}

// redisLogger sends go-redis's messages, such as failed reconnects, to
// Caddy's log.
type redisLogger struct{ *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.Warn(fmt.Sprintf(format, v...))
}

// Validate refuses negative limits and unknown stores.
func (a *App) Validate() error {
	var errs []error
	switch b := a.Store.Backend; {
	case b != StoreMemory && b != StoreFile && b != StoreRedis:
		errs = append(errs, fmt.Errorf("store: unknown backend %q; want %s, %s or %s", b, StoreMemory, StoreFile, StoreRedis))
	case b == StoreRedis && a.Store.URL == "":
		errs = append(errs, errors.New("store redis: a server URL is required, such as redis://localhost:6379/0"))
	case (a.Store.Sentinel != nil || a.Store.Cluster != nil) && b != StoreRedis:
		errs = append(errs, fmt.Errorf("store %s: sentinel and cluster are options of the redis store", b))
	case a.Store.Sentinel != nil && a.Store.Cluster != nil:
		errs = append(errs, errors.New("store redis: sentinel and cluster exclude each other"))
	case a.Store.Sentinel != nil && a.Store.Sentinel.Master == "":
		errs = append(errs, errors.New("store redis: sentinel needs the name of the master"))
	case a.Store.Cluster != nil:
		if opts, err := redis.ParseURL(a.Store.URL); err == nil && opts.DB != 0 {
			errs = append(errs, fmt.Errorf("store redis: a cluster has only database 0, the URL names %d", opts.DB))
		}
	}
	for _, c := range []struct {
		name  string
		value int64
	}{
		{"history", int64(*a.History)},
		{"buffer", int64(a.Buffer)},
		{"heartbeat", int64(a.Heartbeat)},
		{"max_rooms", int64(a.MaxRooms)},
		{"max_subscribers", int64(a.MaxSubscribers)},
		{"idle_timeout", int64(*a.IdleTimeout)},
	} {
		if c.value < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", c.name))
		}
	}
	return errors.Join(errs...)
}

// Start does nothing: this config's limits apply on the started event.
func (a *App) Start() error { return nil }

// Stop ends this config's streams, in case the stopping event was missed.
func (a *App) Stop() error {
	a.stop()
	return nil
}

// Cleanup releases this config's reference to the manager; the last one
// closes it.
func (a *App) Cleanup() error {
	a.stop()
	if a.manager == nil {
		return nil
	}
	if _, err := managers.Delete(a.poolKey); err != nil {
		return fmt.Errorf("releasing room manager: %w", err)
	}
	return nil
}

// Stopping is closed when this config stops; every stream it serves ends
// then, and its client reconnects to the next config.
func (a *App) Stopping() <-chan struct{} { return a.stopCtx.Done() }

// stop ends this config's streams, once, whichever of the stopping event,
// Stop and Cleanup comes first.
func (a *App) stop() {
	a.stopOnce.Do(func() {
		a.stopNow()
		if a.relay != nil {
			a.relay.Close()
		}
		if a.sweeper != nil {
			a.sweeper.stop()
		}
		// A hook call in flight ends now: a receiver that hangs must
		// not hold up the servers' shutdown, which waits for requests.
		// The webhooks stop first, so that their batches in flight
		// count as stopped, not failed.
		a.webhooks.stop()
		a.hooks.Close()
	})
}

func (a *App) roomsConfig() rooms.Config {
	logger := a.logger
	var storeTimeout time.Duration
	if a.Store.Backend == StoreRedis {
		storeTimeout = redisCallTimeout
	}
	return rooms.Config{
		StoreTimeout:   storeTimeout,
		History:        *a.History,
		Buffer:         a.Buffer,
		MaxRooms:       a.MaxRooms,
		MaxSubscribers: a.MaxSubscribers,
		IdleTimeout:    time.Duration(*a.IdleTimeout),
		MaxReplayBytes: maxReplayBytes,
		Hooks: a.webhooks.hooks(rooms.Hooks{
			RoomCreated: func(room string) { logger.Info("room created", zap.String("room", room)) },
			RoomDropped: func(room, reason string) {
				logger.Info("room dropped", zap.String("room", room), zap.String("reason", reason))
			},
			Published: func(_ string, deliveries int) {
				messagesTotal.Inc()
				deliveriesTotal.Add(float64(deliveries))
			},
			Evicted: func(room string) {
				evictionsTotal.Inc()
				logger.Warn("slow stream evicted; it resumes from history", zap.String("room", room))
			},
		}),
	}
}

// managerDestructor lets the usage pool close the manager, then its store,
// when the last config that uses them is gone.
type managerDestructor struct {
	*rooms.Manager
	store io.Closer // nil for the memory store
}

func (m managerDestructor) Destruct() error {
	err := m.Close()
	if m.store != nil {
		err = errors.Join(err, m.store.Close())
	}
	return err
}

// startedHandler starts an app's webhooks, then applies its limits and
// hooks to the shared manager, on Caddy's "started" event: the hooks feed
// the running webhooks, and installed first, they would hand the joins,
// leaves, bans and dropped rooms of a reload to none.
type startedHandler struct{ app *App }

func (h startedHandler) Handle(context.Context, caddy.Event) error {
	h.app.webhooks.start(h.app.manager, h.app.hooks)
	h.app.manager.Configure(h.app.roomsConfig())
	return nil
}

// stoppingHandler ends an app's streams on Caddy's "stopping" event.
type stoppingHandler struct{ app *App }

func (h stoppingHandler) Handle(context.Context, caddy.Event) error {
	h.app.stop()
	return nil
}

// Interface guards
var (
	_ caddy.App           = (*App)(nil)
	_ caddy.Provisioner   = (*App)(nil)
	_ caddy.Validator     = (*App)(nil)
	_ caddy.CleanerUpper  = (*App)(nil)
	_ caddyevents.Handler = startedHandler{}
	_ caddyevents.Handler = stoppingHandler{}
)
