package chat

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/adapt")

func intPtr(n int) *int                      { return &n }
func durPtr(d time.Duration) *caddy.Duration { c := caddy.Duration(d); return &c }
func boolPtr(b bool) *bool                   { return &b }

func TestUnmarshalGlobalOption(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    App
		wantErr string
	}{
		{name: "empty", input: `chat`, want: App{}},
		{name: "empty block", input: `chat {
		}`, want: App{}},
		{name: "everything", input: `chat {
			history 0
			buffer 64
			heartbeat 5s
			max_rooms 10
			max_subscribers 20
			idle_timeout 0
		}`, want: App{History: intPtr(0), Buffer: 64, Heartbeat: caddy.Duration(5 * time.Second), MaxRooms: 10, MaxSubscribers: 20, IdleTimeout: durPtr(0)}},
		{name: "days", input: `chat {
			idle_timeout 2d
		}`, want: App{IdleTimeout: durPtr(48 * time.Hour)}},
		{name: "unknown option", input: `chat {
			histroy 5
		}`, wantErr: `unknown chat option "histroy"`},
		{name: "negative history", input: `chat {
			history -1
		}`, wantErr: `history: want a whole number, 0 or more, got "-1"`},
		{name: "zero buffer", input: `chat {
			buffer 0
		}`, wantErr: `buffer: must be 1 or more`},
		{name: "malformed duration", input: `chat {
			heartbeat soon
		}`, wantErr: `heartbeat: want a duration`},
		{name: "negative duration", input: `chat {
			idle_timeout -1h
		}`, wantErr: `idle_timeout: want a duration`},
		{name: "zero heartbeat", input: `chat {
			heartbeat 0s
		}`, wantErr: `heartbeat must be positive`},
		{name: "missing value", input: `chat {
			max_rooms
		}`, wantErr: `wrong argument count`},
		{name: "argument on the option", input: `chat on`, wantErr: `wrong argument count`},
		{name: "store memory", input: `chat {
			store memory
		}`, want: App{Store: &StoreConfig{Backend: StoreMemory}}},
		{name: "store file", input: `chat {
			store file
		}`, want: App{Store: &StoreConfig{Backend: StoreFile}}},
		{name: "store file with a path", input: `chat {
			store file /var/lib/chat.db
		}`, want: App{Store: &StoreConfig{Backend: StoreFile, Path: "/var/lib/chat.db"}}},
		{name: "unknown store", input: `chat {
			store etcd
		}`, wantErr: `store: want memory, file or redis, got "etcd"`},
		{name: "store redis", input: `chat {
			store redis redis://localhost:6379/0
		}`, want: App{Store: &StoreConfig{Backend: StoreRedis, URL: "redis://localhost:6379/0"}}},
		{name: "store redis with a prefix", input: `chat {
			store redis rediss://u:p@db:6380/2 {
				prefix site1:
			}
		}`, want: App{Store: &StoreConfig{Backend: StoreRedis, URL: "rediss://u:p@db:6380/2", Prefix: "site1:"}}},
		{name: "store redis without a URL", input: `chat {
			store redis
		}`, wantErr: `store redis: want a server URL`},
		{name: "unknown store redis option", input: `chat {
			store redis redis://localhost {
				shards a b
			}
		}`, wantErr: `store redis: unknown option "shards"`},
		{name: "store redis through sentinel", input: `chat {
			store redis redis://:pw@s1:26379/1 {
				prefix chat:
				sentinel mymaster s2:26379 s3:26379
			}
		}`, want: App{Store: &StoreConfig{Backend: StoreRedis, URL: "redis://:pw@s1:26379/1", Prefix: "chat:", Sentinel: &SentinelConfig{Master: "mymaster", Addrs: []string{"s2:26379", "s3:26379"}}}}},
		{name: "store redis cluster", input: `chat {
			store redis redis://n1:7000 {
				cluster n2:7000 n3:7000
			}
		}`, want: App{Store: &StoreConfig{Backend: StoreRedis, URL: "redis://n1:7000", Cluster: &ClusterConfig{Addrs: []string{"n2:7000", "n3:7000"}}}}},
		{name: "store redis cluster seeded by the URL alone", input: `chat {
			store redis redis://n1:7000 {
				cluster
			}
		}`, want: App{Store: &StoreConfig{Backend: StoreRedis, URL: "redis://n1:7000", Cluster: &ClusterConfig{}}}},
		{name: "sentinel without a master", input: `chat {
			store redis redis://s1:26379 {
				sentinel
			}
		}`, wantErr: `sentinel needs the name of the master`},
		{name: "sentinel and cluster", input: `chat {
			store redis redis://s1:26379 {
				sentinel m
				cluster
			}
		}`, wantErr: `sentinel and cluster exclude each other`},
		{name: "prefix without a value", input: `chat {
			store redis redis://localhost {
				prefix
			}
		}`, wantErr: `wrong argument count`},
		{name: "block on the file store", input: `chat {
			store file {
				prefix x
			}
		}`, wantErr: `store file: unknown option "prefix"`},
		{name: "store without backend", input: `chat {
			store
		}`, wantErr: `wrong argument count`},
		{name: "path for the memory store", input: `chat {
			store memory /tmp/x
		}`, wantErr: `wrong argument count`},
		{name: "two paths", input: `chat {
			store file a.db b.db
		}`, wantErr: `wrong argument count`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got App
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			checkErr(t, err, tt.wantErr)
			if tt.wantErr == "" && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUnmarshalDirective(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr string
	}{
		{name: "bare", input: `chat`, want: Handler{}},
		{name: "everything", input: `chat {
			ui off
			identity {http.auth.user.id} required
			reserve_names off
			max_message_size 8KiB
			max_body_size 1MB
			rooms lobby support
			rooms help
			allow_delete
			moderate
			edit_window 5m
			rate_limit 10 1s
			max_streams_per_client 1000
			max_new_rooms_per_client 20
			allow_origins https://example.com http://localhost:8080
			allow_origins https://b.example
			block_words spam "buy now"
			block_words eggs
			block_words_file /etc/caddy/blocked.txt
		}`, want: Handler{
			UI: boolPtr(false), Identity: "{http.auth.user.id}", IdentityRequired: true, ReserveNames: boolPtr(false), MaxMessageSize: 8192, MaxBodySize: 1000000,
			Rooms: []string{"lobby", "support", "help"}, AllowDelete: true, Moderate: true, EditWindow: durPtr(5 * time.Minute),
			RateLimit:           &RateLimit{Posts: 10, Window: caddy.Duration(time.Second)},
			MaxStreamsPerClient: 1000, MaxNewRoomsPerClient: 20,
			AllowOrigins: []string{"https://example.com", "http://localhost:8080", "https://b.example"},
			BlockWords:   []string{"spam", "buy now", "eggs"}, BlockWordsFile: "/etc/caddy/blocked.txt",
		}},
		{name: "token", input: `chat {
			token {
				jwks https://example.eu.auth0.com/.well-known/jwks.json
				issuer https://example.eu.auth0.com/
				audience chat
				user_claim email
				rooms_claim https://example.com/chat
				from header query:access_token
			}
			private team-* staff
		}`, want: Handler{
			Token: &TokenConfig{JWKS: "https://example.eu.auth0.com/.well-known/jwks.json", Issuer: "https://example.eu.auth0.com/",
				Audience: "chat", UserClaim: "email", RoomsClaim: "https://example.com/chat", From: []string{"header", "query:access_token"}},
			Private: []string{"team-*", "staff"},
		}},
		{name: "token key", input: "chat {\n token {\n key hs256 {env.SECRET}\n }\n}", want: Handler{Token: &TokenConfig{Alg: "hs256", Key: "{env.SECRET}"}}},
		{name: "token key without algorithm", input: "chat {\n token {\n key {env.SECRET}\n }\n}", wantErr: "token: key: want an algorithm"},
		{name: "token unknown option", input: "chat {\n token {\n key hs256 x\n secret y\n }\n}", wantErr: `token: unknown option "secret"`},
		{name: "two token blocks", input: "chat {\n token {\n key hs256 x\n }\n token {\n key hs256 y\n }\n}", wantErr: "only one token block"},
		{name: "private bad pattern", input: "chat {\n private team/a\n}", wantErr: `private: "team/a" is not a room pattern`},
		{name: "ui on", input: "chat {\n ui on\n}", want: Handler{UI: boolPtr(true)}},
		{name: "grpc on", input: "chat {\n grpc on\n}", want: Handler{GRPC: true}},
		{name: "grpc off", input: "chat {\n grpc off\n}", want: Handler{}},
		{name: "grpc bare means on", input: "chat {\n grpc\n}", want: Handler{GRPC: true}},
		{name: "ui bare means on", input: "chat {\n ui\n}", want: Handler{UI: boolPtr(true)}},
		{name: "identity optional", input: "chat {\n identity {http.auth.user.id}\n}", want: Handler{Identity: "{http.auth.user.id}"}},
		{name: "reserve_names on", input: "chat {\n reserve_names on\n}", want: Handler{ReserveNames: boolPtr(true)}},
		{name: "identity without placeholder", input: "chat {\n identity\n}", wantErr: `wrong argument count`},
		{name: "identity with another word", input: "chat {\n identity {http.auth.user.id} optional\n}", wantErr: `identity: want required or nothing after the placeholder, got "optional"`},
		{name: "identity with two words", input: "chat {\n identity {http.auth.user.id} required now\n}", wantErr: `identity: unexpected argument "now"`},
		{name: "bad reserve_names", input: "chat {\n reserve_names yes\n}", wantErr: `reserve_names: want on or off, got "yes"`},
		{name: "reserve_names bare means on", input: "chat {\n reserve_names\n}", want: Handler{ReserveNames: boolPtr(true)}},
		{name: "unknown subdirective", input: "chat {\n colour blue\n}", wantErr: `unknown chat subdirective "colour"`},
		{name: "bad ui", input: "chat {\n ui maybe\n}", wantErr: `ui: want on or off`},
		{name: "negative size", input: "chat {\n max_message_size -4KiB\n}", wantErr: `max_message_size: want a positive size`},
		{name: "malformed size", input: "chat {\n max_message_size lots\n}", wantErr: `max_message_size: want a positive size`},
		{name: "zero size", input: "chat {\n max_body_size 0\n}", wantErr: `max_body_size: want a positive size`},
		{name: "invalid room", input: "chat {\n rooms lobby ../etc\n}", wantErr: `rooms: "../etc": invalid room name`},
		{name: "no rooms", input: "chat {\n rooms\n}", wantErr: `wrong argument count`},
		{name: "rate limit without window", input: "chat {\n rate_limit 10\n}", wantErr: `wrong argument count`},
		{name: "rate limit zero", input: "chat {\n rate_limit 0 1s\n}", wantErr: `rate_limit: must be 1 or more`},
		{name: "rate limit bad window", input: "chat {\n rate_limit 10 often\n}", wantErr: `rate_limit: want a duration`},
		{name: "zero streams per client", input: "chat {\n max_streams_per_client 0\n}", wantErr: `max_streams_per_client: must be 1 or more`},
		{name: "streams per client not a number", input: "chat {\n max_streams_per_client many\n}", wantErr: `max_streams_per_client: want a whole number`},
		{name: "streams per client twice the arguments", input: "chat {\n max_streams_per_client 5 6\n}", wantErr: `max_streams_per_client: unexpected argument "6"`},
		{name: "zero new rooms per client", input: "chat {\n max_new_rooms_per_client 0\n}", wantErr: `max_new_rooms_per_client: must be 1 or more`},
		{name: "no origins", input: "chat {\n allow_origins\n}", wantErr: `wrong argument count`},
		{name: "extra argument", input: "chat {\n allow_delete yes\n}", wantErr: `allow_delete: unexpected argument "yes"`},
		{name: "no blocked words", input: "chat {\n block_words\n}", wantErr: `wrong argument count`},
		{name: "no blocked words file", input: "chat {\n block_words_file\n}", wantErr: `wrong argument count`},
		{name: "edit_window 0 turns author edits off", input: "chat {\n edit_window 0\n}", want: Handler{EditWindow: durPtr(0)}},
		{name: "edit_window in days", input: "chat {\n edit_window 1d\n}", want: Handler{EditWindow: durPtr(24 * time.Hour)}},
		{name: "edit_window without a duration", input: "chat {\n edit_window\n}", wantErr: `wrong argument count`},
		{name: "negative edit_window", input: "chat {\n edit_window -5m\n}", wantErr: `edit_window: want a duration`},
		{name: "moderate with an argument", input: "chat {\n moderate all\n}", wantErr: `moderate: unexpected argument "all"`},
		{name: "two blocked words files", input: "chat {\n block_words_file a.txt b.txt\n}", wantErr: `block_words_file: unexpected argument "b.txt"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Handler
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			checkErr(t, err, tt.wantErr)
			if tt.wantErr == "" && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q, want one containing %q", err, want)
	}
}

// TestAdapt turns every testdata/adapt/*.caddyfile into JSON and compares it
// with the .json file beside it; -update rewrites those.
func TestAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfile")
	files = append(files, "Caddyfile.example")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			input, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got, warnings, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt(input, map[string]any{"filename": file})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(file, filepath.Ext(file)) + ".json"
			if file == "Caddyfile.example" {
				golden = "testdata/adapt/Caddyfile.example.json"
			}
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("adapted JSON differs from %s:\n%s", golden, pretty.String())
			}
		})
	}
}

// FuzzCaddyfile: no input makes the global option or the directive parser
// panic.
func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"chat", "chat {\n history 5\n heartbeat 1s\n}", "chat {\n rooms a b\n rate_limit 1 1s\n}", "chat {\n max_streams_per_client 9\n}",
		"chat {\n max_message_size 1EiB\n}", "chat {\n rate_limit\n}", "chat {\n ui\n}", "chat {\n identity {x} required\n reserve_names off\n}", "chat {\n{\n}\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		_ = new(App).UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
		_ = new(Handler).UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
