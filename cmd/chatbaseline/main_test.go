package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestXNet: -xnet changes which HTTP/2 server runs the handler, which is
// all a comparison with it rests on: the handler's own stack names the
// package that called it.
func TestXNet(t *testing.T) {
	for _, tt := range []struct {
		xnet bool
		want string
	}{
		{false, "net/http.(*http2serverConn).runHandler"},
		{true, "golang.org/x/net/http2.(*serverConn).runHandler"},
	} {
		stacks := make(chan string, 1)
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			stacks <- string(debug.Stack())
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		go func() { t.Log(serve(addr, "h2", tt.xnet, handler)) }()

		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		}}
		var resp *http.Response
		for range 50 { // until it listens
			if resp, err = client.Get("https://" + addr + "/"); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("-xnet=%v: served over %s, want HTTP/2", tt.xnet, resp.Proto)
		}
		if stack := <-stacks; !strings.Contains(stack, tt.want) {
			t.Errorf("-xnet=%v: the handler was not run by %s:\n%s", tt.xnet, tt.want, stack)
		}
	}
}
