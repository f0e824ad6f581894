package chat

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/format"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-chat/caddy-chat/hooks"
	"github.com/caddy-chat/caddy-chat/internal/redistest"
	"github.com/caddy-chat/caddy-chat/internal/tokentest"
)

// The docs cannot drift from the code: these tests adapt and validate every
// Caddyfile snippet of the docs, run the tours' curl commands against the
// demo config and compare what they print with what the docs show, and
// follow every link between the pages. CONTRIBUTING.md describes the
// conventions a page keeps for them.

// docPages are the pages whose snippets and links the tests check.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	return append([]string{"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "BENCHMARKS.md", "xcaddy.md"}, pages...)
}

// fence is a fenced code block of a page.
type fence struct {
	page string
	line int    // of the opening fence, from 1
	info string // the language tag: caddy, caddy-d, sh, text ...
	body string
}

func (f fence) String() string { return fmt.Sprintf("%s:%d", f.page, f.line) }

// readFences returns the fenced code blocks of page, in order.
func readFences(t *testing.T, page string) []fence {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var fences []fence
	var open *fence
	var body strings.Builder
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case open == nil && strings.HasPrefix(strings.TrimSpace(line), "```") && !strings.HasPrefix(line, "```"):
			t.Errorf("%s:%d: an indented fence, which the doc tests do not read: start it at the beginning of the line", page, i+1)
		case open == nil && strings.HasPrefix(line, "```"):
			open = &fence{page: page, line: i + 1, info: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
			body.Reset()
		case open != nil && strings.TrimSpace(line) == "```":
			open.body = body.String()
			fences = append(fences, *open)
			open = nil
		case open != nil:
			body.WriteString(line)
			body.WriteByte('\n')
		}
	}
	if open != nil {
		t.Fatalf("%s: the fence is never closed", open)
	}
	return fences
}

// caddyfileLike matches a line that only a Caddyfile has: a fence holding
// one must be tagged, so that the test adapts it or knows it for syntax.
var caddyfileLike = regexp.MustCompile(`(?m)^\s*(chat|handle_path|reverse_proxy|file_server|tls|servers)( .*)?\{?\s*$`)

// TestDocSnippetsAdapt adapts every Caddyfile snippet of the docs with
// Caddy's caddyfile adapter, as `caddy adapt` does, with no warning (not
// even "not formatted": the snippets are as `caddy fmt` writes them), and
// validates the result as `caddy validate` does, provisioning every module:
// a store redis snippet against a redis-server of the test's own, files and
// logs in the test's directory. A ```caddy fence is a whole Caddyfile; a
// ```caddy-d fence holds directives of one site, and is adapted inside a
// site block; a ```caddy-syntax fence shows a syntax with <placeholders>
// and is not adapted.
func TestDocSnippetsAdapt(t *testing.T) {
	// The token snippets read their secret at load, as a reader's server
	// has it in its environment.
	t.Setenv("CHAT_TOKEN_SECRET", tokentest.Secret)
	var redis *redistest.Server
	// The hooks' secrets, as an operator keeps them in the environment.
	t.Setenv("CHAT_SCREEN_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	t.Setenv("CHAT_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	snippets := 0
	for _, page := range docPages(t) {
		for _, f := range readFences(t, page) {
			if redis == nil && strings.Contains(f.body, "store redis") {
				redis = redistest.Start(t)
			}
			var caddyfile string
			switch f.info {
			case "caddy":
				caddyfile = f.body
			case "caddy-d":
				caddyfile = "localhost {\n" + indent(f.body) + "}\n"
			case "caddy-syntax":
				continue
			default:
				// Any other tag holds no Caddyfile, whatever the
				// language it names.
				if caddyfileLike.MatchString(f.body) {
					t.Errorf("%s: a Caddyfile in a fence tagged %q: tag it caddy, caddy-d or caddy-syntax", f, f.info)
				}
				continue
			}
			snippets++
			t.Run(fmt.Sprintf("%s:%d", filepath.Base(f.page), f.line), func(t *testing.T) {
				validateSnippet(t, f, caddyfile, redis)
			})
		}
	}
	if snippets < 20 {
		t.Errorf("only %d Caddyfile snippets in the docs: are the fences tagged?", snippets)
	}
}

// indent indents every line of body by one tab, as `caddy fmt` does inside a
// block.
func indent(body string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(body, "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteByte('\t')
		}
		b.WriteString(line)
	}
	return b.String()
}

// validateSnippet adapts caddyfile, the snippet of f, and validates it with
// what it would touch on a real machine moved into the test's directory.
func validateSnippet(t *testing.T, f fence, caddyfile string, redis *redistest.Server) {
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": f.String()})
	if err != nil {
		t.Fatalf("%s does not adapt: %v\n%s", f, err, caddyfile)
	}
	for _, w := range warnings {
		t.Errorf("%s: %s", f, w)
	}
	var cfg map[string]any
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg["admin"] = map[string]any{"disabled": true}
	cfg["storage"] = map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")}
	apps, _ := cfg["apps"].(map[string]any)
	if app, ok := apps["chat"].(map[string]any); ok {
		if store, ok := app["store"].(map[string]any); ok {
			switch store["backend"] {
			case StoreFile:
				store["path"] = filepath.Join(dir, "chat.db")
			case StoreRedis:
				if redis == nil {
					t.Fatalf("%s: a redis store without store redis in the text", f)
				}
				store["url"] = redis.URL()
				// Rooms of every snippet apart, as other sites on one server.
				store["prefix"] = fmt.Sprintf("%s%s:%d:", store["prefix"], f.page, f.line)
			}
		}
	}
	moveLogFiles(cfg, dir)
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var config caddy.Config
	if err := json.Unmarshal(raw, &config); err != nil {
		t.Fatalf("%s: %v", f, err)
	}
	if err := caddy.Validate(&config); err != nil {
		t.Fatalf("%s does not validate: %v\n%s", f, err, caddyfile)
	}
}

// moveLogFiles points every log file of the config v into dir: validating
// opens them.
func moveLogFiles(v any, dir string) {
	switch v := v.(type) {
	case map[string]any:
		if v["output"] == "file" {
			if name, ok := v["filename"].(string); ok {
				v["filename"] = filepath.Join(dir, "logs", filepath.Base(name))
			}
		}
		for _, child := range v {
			moveLogFiles(child, dir)
		}
	case []any:
		for _, child := range v {
			moveLogFiles(child, dir)
		}
	}
}

// TestDocTour runs the curl tours of the README and the quickstart as a
// reader does, against Caddyfile.example served in this process, and
// compares what each command prints with the ```text fence after it.
//
// The reader's commands run in sh with the real curl, rewritten only to
// reach the test's port and a room of the test's own (the process holds
// other tests' rooms). A `curl -N` stream runs in the background, as in
// the reader's first terminal, until a comment in a later ```sh fence says
// Ctrl-C. A ```text fence shows that stream's output so far when it begins
// as an event stream does (retry:, id:, event:), else what the commands of
// the ```sh fence before it printed. A `name=value` line sets a shell
// variable to the reader's own id: the last id the stream printed. Ids keep
// their sequence number and times are compared by their form, as are
// retry delays.
func TestDocTour(t *testing.T) {
	for _, page := range []string{"README.md", "docs/quickstart.md"} {
		t.Run(filepath.Base(page), func(t *testing.T) {
			runTour(t, page)
		})
	}
}

// demoCommand and testCommand are the commands of the docs that the tour
// does not run: it serves the demo config in this process instead of the
// first, and the second runs every test, this one too.
const (
	demoCommand = "go run ./cmd/caddy run --config Caddyfile.example"
	testCommand = "./test.sh"
)

// tour is the state of one reader's tour.
type tour struct {
	site    string // http://localhost:<port>
	started bool   // the demo runs
	stream  *tourStream
	vars    []string // NAME=value, for sh
}

func runTour(t *testing.T, page string) {
	tr := &tour{site: "http://localhost:" + freePort()}
	room := "lobby" + strings.ReplaceAll(roomFor(t, "tour"), "-", "")
	room = room[:min(len(room), 64)]
	var printed string  // by the commands of the last ```sh fence
	var replay []string // those commands, when they only read
	commands := 0
	for _, f := range readFences(t, page) {
		body := strings.ReplaceAll(f.body, "http://localhost:8080", tr.site)
		body = strings.ReplaceAll(body, "lobby", room)
		switch f.info {
		case "sh":
			printed, replay = tr.run(t, f, body)
			commands++
		case "text":
			want := body
			if strings.HasPrefix(want, "retry:") || strings.HasPrefix(want, "id:") || strings.HasPrefix(want, "event:") {
				if tr.stream == nil {
					t.Fatalf("%s shows a stream's output, but no stream runs", f)
				}
				tr.stream.await(t, f, want)
				continue
			}
			got := printed
			for deadline := time.Now().Add(wait); !sameOutput(got, want) && len(replay) > 0 && time.Now().Before(deadline); {
				// Counts settle within moments of a stream ending: a
				// reader asking again sees them.
				time.Sleep(50 * time.Millisecond)
				got = ""
				for _, c := range replay {
					got += tr.curl(t, f, c)
				}
			}
			if !sameOutput(got, want) {
				t.Errorf("%s: the commands printed\n%s\nthe page shows\n%s", f, got, want)
			}
		}
	}
	if commands < 3 {
		t.Errorf("%s: only %d ```sh fences: is the tour there?", page, commands)
	}
	if !tr.started {
		t.Errorf("%s: the tour never runs the demo (%s)", page, demoCommand)
	}
}

// shLines returns the commands of a ```sh fence, a line continued with a
// backslash joined to the next.
func shLines(body string) []string {
	var lines []string
	var cont string
	for _, line := range strings.Split(body, "\n") {
		line = cont + strings.TrimSpace(line)
		if strings.HasSuffix(line, "\\") {
			cont = strings.TrimSuffix(line, "\\")
			continue
		}
		cont = ""
		if line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// assignment is a line that sets a shell variable, the reader's own id.
var assignment = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=\S+(\s+#.*)?$`)

// run runs the commands of a ```sh fence and returns what they printed,
// and the commands again when they only read, so that they may be asked
// again.
func (tr *tour) run(t *testing.T, f fence, body string) (printed string, readOnly []string) {
	t.Helper()
	writes := false
	for _, line := range shLines(body) {
		switch {
		case strings.HasPrefix(line, "#"):
			if strings.Contains(line, "Ctrl-C") {
				if tr.stream == nil {
					t.Fatalf("%s: Ctrl-C, but no stream runs", f)
				}
				tr.stream.stop(t)
			}
		case line == demoCommand:
			tr.startDemo(t)
		case line == testCommand:
		case assignment.MatchString(line):
			if tr.stream == nil || tr.stream.lastID() == "" {
				t.Fatalf("%s: %q: no stream has printed an id to use", f, line)
			}
			name := assignment.FindStringSubmatch(line)[1]
			tr.vars = append(tr.vars, name+"="+tr.stream.lastID())
		case strings.HasPrefix(line, "curl -N "):
			if tr.stream != nil {
				tr.stream.stop(t)
			}
			tr.stream = tr.openStream(t, f, line)
		case strings.HasPrefix(line, "curl "):
			printed += tr.curl(t, f, line)
			readOnly = append(readOnly, line)
			writes = writes || strings.Contains(line, " -d ") || strings.Contains(line, " -X ")
		default:
			t.Fatalf("%s: the tour runs %q, which the test does not know", f, line)
		}
	}
	if writes {
		readOnly = nil
	}
	return printed, readOnly
}

// startDemo serves Caddyfile.example as the demo command would, on the
// tour's port, with the test's global options (no admin endpoint, storage
// in the test's directory).
func (tr *tour) startDemo(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	demo := string(b)
	if !strings.Contains(demo, "http://:8080 {") || !strings.Contains(demo, "\n{\n") {
		t.Fatal("Caddyfile.example no longer has a global block and the site http://:8080")
	}
	demo = strings.Replace(demo, "\n{\n", "\n{\n\t"+testGlobals()+"\n", 1)
	demo = strings.Replace(demo, "http://:8080 {", tr.site+" {", 1)
	startCaddy(t, caddyfileText(demo))
	tr.started = true
}

// caddyfileText is a Caddyfile as startCaddy takes one.
type caddyfileText string

func (c caddyfileText) String() string { return string(c) }

// curl runs a command that ends and returns what it printed.
func (tr *tour) curl(t *testing.T, f fence, line string) string {
	t.Helper()
	if !tr.started {
		t.Fatalf("%s: %q before the demo runs", f, line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Env = append(os.Environ(), tr.vars...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %s: %v", f, line, err)
	}
	return string(out)
}

// tourStream is a `curl -N` running in the background.
type tourStream struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func (tr *tour) openStream(t *testing.T, f fence, line string) *tourStream {
	t.Helper()
	if !tr.started {
		t.Fatalf("%s: %q before the demo runs", f, line)
	}
	s := &tourStream{done: make(chan struct{})}
	// exec: the signal of stop reaches curl, not a shell around it.
	s.cmd = exec.Command("sh", "-c", "exec "+line)
	s.cmd.Env = append(os.Environ(), tr.vars...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("%s: %s: %v", f, line, err)
	}
	go func() {
		defer close(s.done)
		r := bufio.NewReader(stdout)
		for {
			b, err := r.ReadString('\n')
			s.mu.Lock()
			s.out.WriteString(b)
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *tourStream) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// lastID is the id of the last event the stream printed.
func (s *tourStream) lastID() string {
	var id string
	for _, line := range strings.Split(s.output(), "\n") {
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			id = v
		}
	}
	return id
}

// await waits until the stream has printed what the page shows.
func (s *tourStream) await(t *testing.T, f fence, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !sameOutput(s.output(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the stream printed\n%s\nthe page shows\n%s", f, s.output(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the stream as Ctrl-C does.
func (s *tourStream) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	<-s.done
	_ = s.cmd.Wait()
}

// Parts of an output that differ from run to run: they are compared by
// their form.
var (
	outputTime  = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	outputID    = regexp.MustCompile(`\b[0-9a-z]{6,13}-(\d+)\b`)
	outputRetry = regexp.MustCompile(`(?m)^retry: \d+$`)
	// An anonymous author's secret, as rand.Text makes it.
	outputSecret = regexp.MustCompile(`"secret":"[A-Z2-7]{26}"`)
	roomsAnswer  = regexp.MustCompile(`(?m)^\{"rooms":\[.*\]\}$`)
	roomName     = regexp.MustCompile(`"name":"([^"]+)"`)
)

// sameOutput says whether got is what a page shows as want: the same
// lines, with ids, times, retry delays and secrets compared by their form. A
// /rooms answer is compared only for the rooms the page names: the test's
// Caddy holds other tests' rooms too.
func sameOutput(got, want string) bool {
	if m := roomsAnswer.FindString(want); m != "" {
		var shown []string
		for _, n := range roomName.FindAllStringSubmatch(m, -1) {
			shown = append(shown, n[1])
		}
		got = roomsAnswer.ReplaceAllStringFunc(got, func(answer string) string {
			return onlyRooms(answer, shown)
		})
	}
	return normalOutput(got) == normalOutput(want)
}

// onlyRooms returns the /rooms answer with only the rooms named.
func onlyRooms(answer string, names []string) string {
	var list struct{ Rooms []json.RawMessage }
	if err := json.Unmarshal([]byte(answer), &list); err != nil {
		return answer
	}
	var kept []string
	for _, r := range list.Rooms {
		var room struct{ Name string }
		if json.Unmarshal(r, &room) == nil && slices.Contains(names, room.Name) {
			kept = append(kept, string(r))
		}
	}
	return `{"rooms":[` + strings.Join(kept, ",") + `]}`
}

func normalOutput(s string) string {
	s = outputTime.ReplaceAllString(s, "<time>")
	s = outputID.ReplaceAllString(s, "<epoch>-$1")
	s = outputRetry.ReplaceAllString(s, "retry: <ms>")
	s = outputSecret.ReplaceAllString(s, `"secret":"<secret>"`)
	lines := strings.Split(s, "\n")
	for i, line := range lines {
		lines[i] = strings.TrimRight(line, " \t\r")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// Links of the pages: [text](target), ![alt](target) and src="target".
var (
	mdLink   = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	htmlSrc  = regexp.MustCompile(`src="([^"]+)"`)
	heading  = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	notInID  = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	codeSpan = regexp.MustCompile("`[^`]*`")
)

// TestDocLinks follows every relative link of the pages, to a file and to
// a heading in it, as GitHub renders them, and checks that the README links
// every page of docs/.
func TestDocLinks(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range docPages(t) {
		if strings.HasPrefix(page, "docs/") && !strings.Contains(string(readme), "]("+page+")") {
			t.Errorf("the README does not link %s", page)
		}
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		// Code is not linked: leave out fences and inline code.
		body := codeSpan.ReplaceAllString(prose(string(b)), "")
		var targets []string
		for _, m := range mdLink.FindAllStringSubmatch(body, -1) {
			targets = append(targets, m[1])
		}
		for _, m := range htmlSrc.FindAllStringSubmatch(body, -1) {
			targets = append(targets, m[1])
		}
		for _, target := range targets {
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links %s: %v", page, target, err)
				continue
			}
			if anchor != "" && !slices.Contains(headingIDs(t, path), anchor) {
				t.Errorf("%s links %s: no such heading in %s", page, target, path)
			}
		}
	}
}

// headingIDs returns the anchors GitHub gives the headings of a page:
// lower case, punctuation dropped, spaces as hyphens.
func headingIDs(t *testing.T, page string) []string {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range heading.FindAllStringSubmatch(prose(string(b)), -1) {
		id := strings.ToLower(strings.ReplaceAll(m[1], "`", ""))
		ids = append(ids, strings.ReplaceAll(notInID.ReplaceAllString(id, ""), " ", "-"))
	}
	return ids
}

// prose returns a page without its fenced blocks, whose lines are neither
// headings nor links.
func prose(page string) string {
	var b strings.Builder
	inFence := false
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// TestDocSizes: each page stays the size of what a reader came for: the
// README a front page, each page of docs/ one topic, BENCHMARKS.md a
// summary with its methods, not a notebook (the history is in git).
func TestDocSizes(t *testing.T) {
	limits := map[string]int{"README.md": 250, "BENCHMARKS.md": 400}
	for _, page := range docPages(t) {
		if strings.HasPrefix(page, "docs/") {
			limits[page] = 260
		}
	}
	for page, limit := range limits {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(string(b), "\n"); lines >= limit {
			t.Errorf("%s has %d lines, want fewer than %d: split it or say it shorter", page, lines, limit)
		}
	}
}

// TestDocTokenRecipe runs docs/tokens.md's recipe of a function minting HS256
// tokens as written, with node, moved only to free ports: the function
// answers a token, which signs alice in to the private room team-a; the
// room page is told where to fetch it; a stream without one is refused.
func TestDocTokenRecipe(t *testing.T) {
	var script, caddyfile string
	for _, f := range readFences(t, "docs/tokens.md") {
		switch {
		case f.info == "js" && strings.HasPrefix(f.body, "// token.mjs"):
			script = f.body
		case f.info == "caddy" && strings.Contains(f.body, "token_url"):
			caddyfile = f.body
		}
	}
	if script == "" || caddyfile == "" {
		t.Fatal("docs/tokens.md has no token.mjs recipe with its Caddyfile")
	}
	fnPort, site := freePort(), "http://localhost:"+freePort()
	script = strings.ReplaceAll(script, "3000", fnPort)
	caddyfile = strings.ReplaceAll(strings.ReplaceAll(caddyfile, "localhost:3000", "localhost:"+fnPort), "http://localhost:8080", site)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token.mjs"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAT_TOKEN_SECRET", tokentest.Secret)
	startRecipe(t, dir, "node", "token.mjs")
	startCaddy(t, caddyfileText("{\n\t"+testGlobals()+"\n}\n"+caddyfile))
	defer reload(t, config{})

	var got struct{ Token string }
	waitFor(t, "the function's token", func() bool {
		r, err := tryDo("GET", site+"/api/chat-token", "")
		return err == nil && r.status == http.StatusOK && json.Unmarshal([]byte(r.body), &got) == nil && got.Token != ""
	})
	body := `{"room":"team-a","user":"mallory","message":"from the recipe"}`
	if r := do(t, "POST", site+"/chat/submit", body, "Content-Type", ctJSON, "Authorization", "Bearer "+got.Token); r.status != http.StatusCreated || r.json["user"] != "alice" || r.json["verified"] != true {
		t.Fatalf("a post with the function's token: %d %s, want 201 by alice, verified", r.status, r.body)
	}
	if r := do(t, "GET", site+"/chat/rooms/team-a/messages?access_token="+got.Token, ""); r.status != http.StatusOK {
		t.Fatalf("history with the token in the query: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", site+"/chat/stream/team-a", ""); r.status != http.StatusUnauthorized || r.json["reason"] != "token_missing" {
		t.Fatalf("a stream without a token: %d %s, want 401 token_missing", r.status, r.body)
	}
	if r := do(t, "GET", site+"/chat/room/team-a", ""); !strings.Contains(r.body, `data-token-url="/api/chat-token"`) {
		t.Fatalf("the room page does not fetch its token from the function: %d", r.status)
	}
}

// recipeProgram is a program of a recipe, running beside the test's Caddy:
// what it prints tells what it received.
type recipeProgram struct {
	name string
	mu   sync.Mutex
	out  strings.Builder
}

func (p *recipeProgram) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *recipeProgram) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startRecipe runs a recipe's program in dir until the test ends, and
// shows what it printed when the test fails.
func startRecipe(t *testing.T, dir, name string, args ...string) *recipeProgram {
	t.Helper()
	p := &recipeProgram{name: filepath.Base(name)}
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, p, p
	if err := cmd.Start(); err != nil {
		t.Fatalf("running the recipe's %s: %v", p.name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("the recipe's %s printed:\n%s", p.name, p.output())
		}
	})
	return p
}

// TestDocReceiverRecipes runs docs/receivers.md's receivers as written,
// moved only to free ports: the Go one built from a module of its own, as
// `go run` does, the JavaScript one with node. A real Caddy screens posts
// with the JavaScript function and sends its webhooks to both: a post with
// a link is refused with the function's reason, another is stored and
// reaches both receivers, which print it only once its batch verified. A
// tampered body and a stale timestamp are refused by each.
func TestDocReceiverRecipes(t *testing.T) {
	var goSource, jsSource, caddyfile string
	for _, f := range readFences(t, "docs/receivers.md") {
		switch {
		case f.info == "go" && strings.HasPrefix(f.body, "// receiver.go"):
			goSource = f.body
		case f.info == "js" && strings.HasPrefix(f.body, "// hooks.mjs"):
			jsSource = f.body
		case f.info == "caddy":
			caddyfile = f.body
		}
	}
	if goSource == "" || jsSource == "" || caddyfile == "" {
		t.Fatal("docs/receivers.md lacks receiver.go, hooks.mjs or their Caddyfile")
	}
	if formatted, err := format.Source([]byte(goSource)); err != nil || string(formatted) != goSource {
		t.Errorf("receiver.go is not as gofmt writes it (%v)", err)
	}
	if !strings.Contains(goSource, `"localhost:3001"`) || !strings.Contains(jsSource, `listen(3002, "localhost")`) ||
		!strings.Contains(caddyfile, "http://localhost:3001/") || !strings.Contains(caddyfile, "http://localhost:3002/") {
		t.Fatal("the recipes no longer listen on localhost:3001 and 3002, which the test moves to free ports")
	}
	goPort, jsPort, site := freePort(), freePort(), "http://localhost:"+freePort()
	goSource = strings.ReplaceAll(goSource, "localhost:3001", "localhost:"+goPort)
	jsSource = strings.ReplaceAll(jsSource, "listen(3002,", "listen("+jsPort+",")
	caddyfile = strings.NewReplacer("localhost:3001", "localhost:"+goPort, "localhost:3002", "localhost:"+jsPort,
		"http://localhost:8080", site).Replace(caddyfile)
	// The screen's secret is not the webhooks': the function must pick
	// the key by the route called.
	screenKey := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the recipes' own screen secret!!"))
	t.Setenv("CHAT_SCREEN_SECRET", screenKey)
	t.Setenv("CHAT_WEBHOOK_SECRET", webhookSecret)

	dir := t.TempDir()
	for name, source := range map[string]string{"receiver.go": goSource, "hooks.mjs": jsSource} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(source), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// go build, not go run: the test stops the receiver itself, which go
	// run would leave running.
	for _, args := range [][]string{{"mod", "init", "receiver"}, {"build", "-o", "receiver", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	receivers := []*recipeProgram{startRecipe(t, dir, filepath.Join(dir, "receiver")), startRecipe(t, dir, "node", "hooks.mjs")}
	startCaddy(t, caddyfileText("{\n\t"+testGlobals()+"\n}\n"+caddyfile))
	defer reload(t, config{})
	waitFor(t, "the receivers to listen", func() bool {
		for _, port := range []string{goPort, jsPort} {
			if _, err := tryDo("GET", "http://localhost:"+port+"/", ""); err != nil {
				return false
			}
		}
		return true
	})

	room := roomFor(t, "receivers")
	post := func(text string) response {
		body, _ := json.Marshal(map[string]string{"room": room, "user": "sam", "message": text})
		return do(t, "POST", site+"/chat/submit", string(body), "Content-Type", ctJSON)
	}
	if r := post("see https://spam.example"); r.status != http.StatusForbidden || r.json["reason"] != "screen_refused" || r.json["error"] != "no links, please" {
		t.Fatalf("a post with a link: %d %s, want 403 screen_refused with the function's reason", r.status, r.body)
	}
	r := post("hello from the recipes")
	if r.status != http.StatusCreated {
		t.Fatalf("a post the function's screen allows: %d %s, want 201", r.status, r.body)
	}
	id, _ := r.json["id"].(string)
	for _, p := range receivers {
		waitFor(t, p.name+" to print the message", func() bool {
			out := p.output()
			return strings.Contains(out, "message "+id) && strings.Contains(out, "hello from the recipes")
		})
	}

	// Calls signed as Caddy signs them, then tampered with or stale.
	screenCall := fmt.Sprintf(`{"kind":"post","room":%q,"user":"sam","verified":false,"message":"signed","client":"c1"}`, room)
	batch := fmt.Sprintf(`{"events":[{"type":"message","room":%q,"id":"x-1","time":"2026-12-07T09:00:00Z","data":{"message":"signed"}}]}`, room)
	for _, c := range []struct{ url, secret, body string }{
		{"http://localhost:" + goPort + "/api/chat-events", webhookSecret, batch},
		{"http://localhost:" + jsPort + "/api/chat-events", webhookSecret, batch},
		{"http://localhost:" + jsPort + "/api/screen", screenKey, screenCall},
	} {
		secret, err := hooks.ParseSecret(c.secret)
		if err != nil {
			t.Fatal(err)
		}
		call := func(body string, at time.Time) int {
			h := http.Header{}
			secret.SetHeaders(h, hooks.NewID(), at, []byte(c.body))
			headers := []string{"Content-Type", ctJSON}
			for k := range h {
				headers = append(headers, k, h.Get(k))
			}
			return do(t, "POST", c.url, body, headers...).status
		}
		if status := call(strings.Replace(c.body, "signed", "forged", 1), time.Now()); status != http.StatusUnauthorized {
			t.Errorf("%s took a tampered body: %d, want 401", c.url, status)
		}
		if status := call(c.body, time.Now().Add(-10*time.Minute)); status != http.StatusUnauthorized {
			t.Errorf("%s took a call stamped ten minutes ago: %d, want 401", c.url, status)
		}
		if status := call(c.body, time.Now()); status/100 != 2 {
			t.Errorf("%s refused a call signed as Caddy signs: %d, want 2xx", c.url, status)
		}
	}
	for _, p := range receivers {
		if strings.Contains(p.output(), "forged") {
			t.Errorf("%s printed a tampered batch", p.name)
		}
	}
}
