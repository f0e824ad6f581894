package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// BenchmarkFanout measures one frame delivered to many streams over real
// loopback connections, plain and TLS: the cost per delivery of the shared
// writers, including the client reading it.
func BenchmarkFanout(b *testing.B) {
	for _, secure := range []bool{false, true} {
		for _, n := range []int{100, 1000} {
			name := fmt.Sprintf("plain/streams=%d", n)
			if secure {
				name = fmt.Sprintf("tls/streams=%d", n)
			}
			b.Run(name, func(b *testing.B) { benchFanout(b, n, secure) })
		}
	}
}

func benchFanout(b *testing.B, n int, secure bool) {
	p := New(Config{Writers: 2, WriteTimeout: 10 * time.Second})
	defer p.Close()
	frame := []byte("id: 1\nevent: message\ndata: {\"id\":\"1\",\"room\":\"r\",\"user\":\"u\",\"text\":\"hello, world\"}\n\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var srvCfg *tls.Config
	if secure {
		srvCfg = testTLSConfig(b)
	}
	var (
		queues  []*queue
		clients []net.Conn
		got     sync.WaitGroup
		start   = make(chan int)
	)
	for range n {
		go func() {
			c, err := ln.Accept()
			if err == nil && secure {
				c = tls.Server(c, srvCfg)
			}
			acceptedConn <- c
		}()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		if secure {
			tc := tls.Client(client, &tls.Config{InsecureSkipVerify: true})
			go tc.Handshake()
			client = tc
		}
		server := <-acceptedConn
		if secure {
			if err := server.(*tls.Conn).Handshake(); err != nil {
				b.Fatal(err)
			}
		}
		clients = append(clients, client)
		s := p.NewStream()
		q := &queue{wake: s.Wake}
		s.Attach(server, q, nil)
		queues = append(queues, q)
		go func() { // each round, read one frame
			buf := make([]byte, len(frame))
			for rounds := range start {
				for range rounds {
					if _, err := io.ReadFull(client, buf); err != nil {
						break
					}
				}
				got.Done()
			}
		}()
	}
	defer func() {
		close(start)
		for _, c := range clients {
			c.Close()
		}
	}()
	b.ResetTimer()
	got.Add(n)
	for range n {
		start <- b.N
	}
	for range b.N {
		for _, q := range queues {
			q.mu.Lock()
			q.frames = append(q.frames, frame)
			q.mu.Unlock()
			q.wake()
		}
	}
	got.Wait()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

var acceptedConn = make(chan net.Conn)

// testTLSConfig returns a server config with a fresh self-signed certificate.
func testTLSConfig(tb testing.TB) *tls.Config {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
