package hooks

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver starts an in-process HTTP server that answers with handle and
// stops with the test.
func receiver(t *testing.T, handle http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(handle)
	t.Cleanup(srv.Close)
	return srv
}

// newClient returns a client closed with the test.
func newClient(t *testing.T) *Client {
	t.Helper()
	c := NewClient()
	t.Cleanup(c.Close)
	return c
}

func TestPostIsSignedSoTheReceiverVerifies(t *testing.T) {
	secret, _ := ParseSecret(vectorSecret)
	got := make(chan error, 1)
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			got <- errors.New("Content-Type " + ct)
			return
		}
		got <- secret.Verify(r.Header, body, time.Now())
		w.Write([]byte(`{"ok":true}`))
	})
	answer, err := newClient(t).Post(context.Background(), Endpoint{URL: srv.URL, Secret: secret}, NewID(), []byte(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Errorf("receiver's verification: %v", err)
	}
	if answer.Status != 200 || string(answer.Body) != `{"ok":true}` {
		t.Errorf("answer %d %q", answer.Status, answer.Body)
	}
}

func TestPostFailsOnAnythingButTwoHundreds(t *testing.T) {
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "gone", http.StatusGone)
	})
	answer, err := newClient(t).Post(context.Background(), Endpoint{URL: srv.URL}, NewID(), []byte(`{}`))
	var status *StatusError
	if !errors.As(err, &status) || status.Status != http.StatusGone || answer.Status != http.StatusGone {
		t.Fatalf("Post = %d, %v; want a StatusError 410", answer.Status, err)
	}
	if !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("error %q does not name the hook's URL", err)
	}
}

func TestErrorsHideTheURLsPassword(t *testing.T) {
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "oops", http.StatusInternalServerError)
	})
	withPassword := strings.Replace(srv.URL, "://", "://hook:hunter2@", 1)
	if _, err := newClient(t).Post(context.Background(), Endpoint{URL: withPassword}, NewID(), []byte(`{}`)); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v: want a failure that hides the URL's password", err)
	}
}

func TestPostDoesNotFollowRedirects(t *testing.T) {
	var followed atomic.Bool
	target := receiver(t, func(w http.ResponseWriter, r *http.Request) { followed.Store(true) })
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	_, err := newClient(t).Post(context.Background(), Endpoint{URL: srv.URL}, NewID(), []byte(`{}`))
	var status *StatusError
	if !errors.As(err, &status) || status.Status != http.StatusTemporaryRedirect {
		t.Errorf("Post = %v, want a StatusError 307", err)
	}
	if followed.Load() {
		t.Error("the redirect was followed")
	}
}

func TestPostRefusesALargeAnswerAndDropsTheConnection(t *testing.T) {
	for _, declared := range []bool{true, false} {
		var conns atomic.Int32
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := []byte(strings.Repeat("x", 64<<10))
			if declared {
				w.Header().Set("Content-Length", "1048576")
			}
			for range 16 { // 1 MiB
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}))
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		c := newClient(t)
		for range 2 {
			answer, err := c.Post(context.Background(), Endpoint{URL: srv.URL}, NewID(), []byte(`{}`))
			if !errors.Is(err, ErrAnswerTooLarge) || len(answer.Body) != 0 {
				t.Errorf("Content-Length declared %v: Post = %d bytes, %v; want ErrAnswerTooLarge", declared, len(answer.Body), err)
			}
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("Content-Length declared %v: %d connections for 2 calls, want each dropped after its answer ran over", declared, n)
		}
	}
}

func TestPostRefusesAnswerHeadersPastTheAnswerLimit(t *testing.T) {
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("x", 4<<20))
		io.WriteString(w, `{}`)
	})
	answer, err := newClient(t).Post(context.Background(), Endpoint{URL: srv.URL}, NewID(), []byte(`{}`))
	if err == nil || len(answer.Header.Get("X-Big")) != 0 {
		t.Errorf("an answer with 4 MiB of headers: %d bytes of X-Big, %v; want it refused", len(answer.Header.Get("X-Big")), err)
	}
}

func TestPostTimesOut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	start := time.Now()
	_, err := newClient(t).Post(context.Background(), Endpoint{URL: srv.URL, Timeout: 200 * time.Millisecond}, NewID(), []byte(`{}`))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Post = %v, want a deadline exceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a 200ms timeout took %v", took)
	}
}

func TestCloseEndsCallsInFlight(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{}, 4)
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	})
	c := NewClient()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := c.Post(context.Background(), Endpoint{URL: srv.URL, Timeout: time.Minute}, NewID(), []byte(`{}`))
			errs <- err
		}()
	}
	for range 4 {
		<-arrived
	}
	start := time.Now()
	c.Close()
	for range 4 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("a call in flight at Close: %v, want ErrClosed", err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("calls ended %v after Close, want within 1s", took)
	}
	if _, err := c.Post(context.Background(), Endpoint{URL: srv.URL}, NewID(), []byte(`{}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("a call after Close: %v, want ErrClosed", err)
	}
}

func TestPoolIsBoundedPerHost(t *testing.T) {
	release := make(chan struct{})
	var open, most atomic.Int32
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		n := open.Add(1)
		defer open.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
	})
	c := newClient(t)
	var wg sync.WaitGroup
	for range maxConnsPerHost + 16 {
		wg.Go(func() {
			c.Post(context.Background(), Endpoint{URL: srv.URL, Timeout: 5 * time.Second}, NewID(), []byte(`{}`))
		})
	}
	deadline := time.Now().Add(2 * time.Second)
	for open.Load() < maxConnsPerHost && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // time for any call beyond the bound to arrive
	close(release)
	wg.Wait()
	if got := most.Load(); got != maxConnsPerHost {
		t.Errorf("at most %d calls at the receiver at once, want the pool's bound %d", got, maxConnsPerHost)
	}
}

func TestPostRefusesAnIDWithADot(t *testing.T) {
	if _, err := newClient(t).Post(context.Background(), Endpoint{URL: "http://127.0.0.1:1"}, "msg.1", nil); err == nil {
		t.Error("an id with a dot was sent")
	}
}
