// Command chatbaseline is the reference that the benchmarks measure
// caddy-chat against: the smallest correct net/http Server-Sent Events
// fan-out that speaks the chat's wire contract (POST /submit, GET
// /stream/{room}, the same frames and ids). Each subscriber has a buffered
// queue; a stream drains everything queued, then flushes once. It keeps no
// history, has no limits and no Caddy.
//
//	chatbaseline -addr 127.0.0.1:8090
//
// It serves the same fan-out, unchanged, over the protocol -proto names:
// h1 is plain HTTP/1.1; h2 is HTTPS (HTTP/2 by ALPN, or HTTP/1.1) through
// ListenAndServeTLS with a self-signed certificate made at start; h3 is
// HTTP/3 through quic-go's http3.Server on UDP, with the same certificate
// and h2 on the same TCP port, as Caddy serves it. With -xnet, HTTP/2 is
// served by golang.org/x/net/http2, the package Caddy configures its servers
// with, instead of the copy bundled in net/http, to tell what that choice
// costs apart from the plugin (with Go 1.26: from Go 1.27 on, x/net's server
// is net/http's). quic is no chat at all: it accepts QUIC
// connections (ALPN "chat-idle") and holds them, for chatbench -proto quic
// to measure what quic-go costs per idle connection.
//
//	chatbaseline -addr 127.0.0.1:8443 -proto h3
//
// -grpc serves the same rooms to gRPC clients too, on an address of its
// own: chat.v1.ChatService's Stream and Submit, by a grpc.Server with
// grpc-go's own HTTP/2 transport, its default codec and a self-signed
// certificate, as a bare grpc-go service would. Posts to POST /submit reach
// its streams, so chatbench -proto grpc publishes over -url and subscribes
// over -subscribe-urls:
//
//	chatbaseline -addr 127.0.0.1:8091 -proto h2 -grpc 127.0.0.1:8092
//
// -debug serves net/http/pprof's profiles on an address of their own, for a
// profile of the baseline taken the way Caddy's admin endpoint gives the
// plugin's.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	_ "net/http/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/caddy-chat/caddy-chat/proto/chat/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	proto := flag.String("proto", "h1", "h1 (HTTP/1.1), h2 (HTTPS with HTTP/2), h3 (HTTP/3, and h2 on the same TCP port) or quic (bare QUIC connections)")
	buffer := flag.Int("buffer", 256, "frames queued per subscriber before it is dropped")
	xnet := flag.Bool("xnet", false, "serve HTTP/2 (h2, and h3's TCP side) with golang.org/x/net/http2, as Caddy does")
	debug := flag.String("debug", "", "serve net/http/pprof's profiles on this address too, as Caddy's admin endpoint does")
	grpcAddr := flag.String("grpc", "", "serve chat.v1.ChatService with grpc-go on this address too")
	flag.Parse()
	if *debug != "" {
		// Listen before serving the chat, so that a taken address stops
		// the baseline at start, where its caller sees the error.
		ln, err := net.Listen("tcp", *debug)
		if err != nil {
			log.Fatalf("-debug: %v", err)
		}
		go func() { log.Fatal(http.Serve(ln, nil)) }()
	}
	h := newHub(*buffer)
	if *grpcAddr != "" {
		ln, err := net.Listen("tcp", *grpcAddr)
		if err != nil {
			log.Fatalf("-grpc: %v", err)
		}
		log.Printf("chatbaseline serving gRPC on %s", *grpcAddr)
		go func() { log.Fatal(serveGRPC(ln, h)) }()
	}
	log.Printf("chatbaseline listening on %s (%s)", *addr, *proto)
	log.Fatal(serve(*addr, *proto, *xnet, h.routes()))
}

// serve serves handler over proto until it fails, HTTP/2 through x/net's
// package with xnet.
func serve(addr, proto string, xnet bool, handler http.Handler) error {
	if proto == "h1" {
		return http.ListenAndServe(addr, handler)
	}
	if proto != "h2" && proto != "h3" && proto != "quic" {
		return fmt.Errorf("-proto %q: want h1, h2, h3 or quic", proto)
	}
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	if proto == "quic" {
		return holdQUIC(addr, cert)
	}
	tcp := &http.Server{Addr: addr, Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	if xnet {
		if err := http2.ConfigureServer(tcp, new(http2.Server)); err != nil {
			return fmt.Errorf("configuring x/net's HTTP/2: %w", err)
		}
	}
	if proto == "h2" {
		return tcp.ListenAndServeTLS("", "")
	}
	udp := &http3.Server{Addr: addr, Handler: handler, TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
	failed := make(chan error, 2)
	go func() { failed <- udp.ListenAndServe() }()
	go func() { failed <- tcp.ListenAndServeTLS("", "") }()
	return <-failed
}

// holdQUIC accepts QUIC connections and keeps them open, doing nothing
// else: quic-go's own goroutines and buffers are all each one costs.
func holdQUIC(addr string, cert tls.Certificate) error {
	ln, err := quic.ListenAddr(addr, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"chat-idle"}}, nil)
	if err != nil {
		return fmt.Errorf("listening for QUIC: %w", err)
	}
	for {
		if _, err := ln.Accept(context.Background()); err != nil {
			return fmt.Errorf("accepting a QUIC connection: %w", err)
		}
	}
}

// selfSigned makes a certificate for localhost and 127.0.0.1, signed by its
// own key.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating a key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "chatbaseline"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("signing the certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

type hub struct {
	mu     sync.Mutex
	rooms  map[string]*room
	buffer int
	epoch  string
}

func newHub(buffer int) *hub {
	return &hub{rooms: map[string]*room{}, buffer: buffer, epoch: strconv.FormatInt(time.Now().UnixMicro(), 36)}
}

// routes serves the HTTP API: streams and posts.
func (h *hub) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream/{room}", h.stream)
	mux.HandleFunc("POST /submit", h.submit)
	return mux
}

type room struct {
	mu   sync.Mutex
	seq  uint64
	subs map[chan *post]struct{}
}

// post is a message as its subscribers are sent it: the SSE frame, and the
// event a gRPC stream marshals.
type post struct {
	frame []byte
	event *chatv1.StreamEvent
}

func (h *hub) room(name string) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r == nil {
		r = &room{subs: map[chan *post]struct{}{}}
		h.rooms[name] = r
	}
	return r
}

// subscribe queues the room's posts for a new subscriber, until leave is
// called or the queue is closed for falling behind.
func (h *hub) subscribe(name string) (queue chan *post, leave func()) {
	r := h.room(name)
	queue = make(chan *post, h.buffer)
	r.mu.Lock()
	r.subs[queue] = struct{}{}
	r.mu.Unlock()
	return queue, func() {
		r.mu.Lock()
		delete(r.subs, queue)
		r.mu.Unlock()
	}
}

func (h *hub) stream(w http.ResponseWriter, req *http.Request) {
	queue, leave := h.subscribe(req.PathValue("room"))
	defer leave()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write([]byte("retry: 1000\n\n"))
	flusher := w.(http.Flusher)
	flusher.Flush()
	for {
		select {
		case p, ok := <-queue:
			if !ok {
				return // dropped for falling behind
			}
			w.Write(p.frame)
			for n := len(queue); n > 0; n-- {
				w.Write((<-queue).frame)
			}
			flusher.Flush()
		case <-req.Context().Done():
			return
		}
	}
}

type message struct {
	ID      string `json:"id"`
	Room    string `json:"room"`
	User    string `json:"user"`
	Message string `json:"message"`
	Time    string `json:"time"`
}

func (h *hub) submit(w http.ResponseWriter, req *http.Request) {
	var in message
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 64<<10)).Decode(&in); err != nil || in.Room == "" || in.Message == "" {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	data, _ := h.publish(in.Room, in.User, in.Message)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(data)
}

// publish numbers a message and queues it for the room's subscribers,
// dropping those whose queue is full. It returns the message as JSON and
// as protobuf, for its author.
func (h *hub) publish(roomName, user, text string) (data []byte, msg *chatv1.Message) {
	r := h.room(roomName)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	now := time.Now().UTC()
	m := message{ID: h.epoch + "-" + strconv.FormatUint(r.seq, 10), Room: roomName, User: user, Message: text,
		Time: now.Format("2006-01-02T15:04:05.000Z07:00")}
	data, _ = json.Marshal(m)
	msg = &chatv1.Message{Id: m.ID, Room: m.Room, User: m.User, Message: m.Message, Time: timestamppb.New(now.Truncate(time.Millisecond))}
	p := &post{
		frame: fmt.Appendf(nil, "id: %s\nevent: message\ndata: %s\n\n", m.ID, data),
		event: &chatv1.StreamEvent{Event: &chatv1.StreamEvent_Message{Message: msg}},
	}
	for queue := range r.subs {
		select {
		case queue <- p:
		default:
			delete(r.subs, queue)
			close(queue)
		}
	}
	return data, msg
}

// chatServer is what serves chatService: the part of chat.v1.ChatService
// a fan-out needs.
type chatServer interface {
	streamRPC(*chatv1.StreamRequest, grpc.ServerStream) error
	submitRPC(*chatv1.SubmitRequest) (*chatv1.Message, error)
}

// chatService describes chatServer to grpc-go as protoc-gen-go-grpc would:
// the proto package has connect-go's stubs only, and the plugin serves
// them, so the baseline describes its two methods itself.
var chatService = grpc.ServiceDesc{
	ServiceName: "chat.v1.ChatService",
	HandlerType: (*chatServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Submit",
		Handler: func(srv any, _ context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(chatv1.SubmitRequest)
			if err := decode(in); err != nil {
				return nil, err
			}
			return srv.(chatServer).submitRPC(in)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(chatv1.StreamRequest)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(chatServer).streamRPC(in, stream)
		},
	}},
}

// serveGRPC serves chatService on ln, over TLS with a self-signed
// certificate, until it fails.
func serveGRPC(ln net.Listener, h *hub) error {
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	srv.RegisterService(&chatService, h)
	return srv.Serve(ln)
}

// streamRPC sends the room's messages as they come, each marshalled by
// grpc-go for this stream; grpc-go's writer batches what is sent meanwhile
// into one write.
func (h *hub) streamRPC(in *chatv1.StreamRequest, stream grpc.ServerStream) error {
	queue, leave := h.subscribe(in.GetRoom())
	defer leave()
	// The headers say the stream is open: grpc-go would otherwise hold
	// them back until the first message.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		select {
		case p, ok := <-queue:
			if !ok {
				return status.Error(codes.ResourceExhausted, "dropped for falling behind")
			}
			if err := stream.SendMsg(p.event); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (h *hub) submitRPC(in *chatv1.SubmitRequest) (*chatv1.Message, error) {
	if in.GetRoom() == "" || in.GetMessage() == "" {
		return nil, status.Error(codes.InvalidArgument, "room and message are required")
	}
	_, msg := h.publish(in.GetRoom(), in.GetUser(), in.GetMessage())
	return msg, nil
}
