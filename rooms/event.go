package rooms

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// EventKind says what an Event is.
type EventKind uint8

// The kinds of events a room sends its readers.
const (
	// EventMessage carries a message posted to the room.
	EventMessage EventKind = iota + 1
	// EventPresence carries users who joined and left the room.
	EventPresence
	// EventReset starts a replay whose position could not be honoured:
	// the reader may have missed messages before Oldest.
	EventReset
	// EventClose ends the stream of a deleted room.
	EventClose
	// EventEdit carries an edit of a message (Message.Action).
	EventEdit
	// EventDelete carries a delete of a message (Message.Action).
	EventDelete
	// EventExpired ends a stream whose reader's grant ran out, such as
	// a token at its exp: the reader resumes with a fresh one.
	EventExpired
)

// Event is one entry a room sends its readers. A room makes each event once
// and shares it, unchanged, with every reader: an adapter encodes it with
// its Codec, the encoding is made on first use and kept with the event,
// so that a message read by a thousand streams is encoded once per wire
// format, not once per stream. Events must not be modified once made.
type Event struct {
	Kind     EventKind
	Message  Message        // EventMessage, EventEdit and EventDelete
	Presence PresenceChange // EventPresence
	Oldest   string         // EventReset: the oldest id retained, "" for none

	json    encoding
	encoded [maxCodecs]encoding
}

// encoding is an event's form in one format, made once.
type encoding struct {
	once sync.Once
	done atomic.Bool // v is made
	v    any
}

// MessageEvent returns the event of an entry of a room's log: a message,
// or an action on one.
func MessageEvent(m Message) *Event {
	kind := EventMessage
	switch m.Action {
	case ActionEdit:
		kind = EventEdit
	case ActionDelete:
		kind = EventDelete
	}
	return &Event{Kind: kind, Message: m}
}

// CloseEvent is the event that ends a deleted room's streams. Being shared,
// it is encoded once per codec for the life of the process.
var CloseEvent = &Event{Kind: EventClose}

// ExpiredEvent is the event that ends an expired subscription's stream.
var ExpiredEvent = &Event{Kind: EventExpired}

// JSON returns the event's data as one line of JSON: the message, the
// action, the presence change, or the reset's oldest id. Codecs that carry JSON share
// it, and a replay's byte budget counts it.
func (e *Event) JSON() []byte {
	e.json.once.Do(func() { e.json.v = e.marshalJSON() })
	return e.json.v.([]byte)
}

func (e *Event) marshalJSON() []byte {
	var b []byte
	switch e.Kind {
	case EventMessage:
		b, _ = e.Message.MarshalJSON() // cannot fail: strings, a time and a bool
	case EventPresence:
		b = marshalPresenceChange(e.Presence)
	case EventReset:
		b = marshalOldest(e.Oldest)
	case EventEdit, EventDelete:
		b = marshalAction(&e.Message)
	default:
		b = []byte("{}")
	}
	return b
}

// Codec is a wire format that events are encoded in, such as the event
// stream of SSE or gRPC's protobuf, and T what an adapter writes of an
// event in it. A program makes each of its few codecs once, as a package
// variable, with NewCodec.
type Codec[T any] struct {
	slot   int
	encode func(*Event) T
}

// maxCodecs is how many codecs a program may make: each event has room for
// an encoding in each.
const maxCodecs = 4

var codecs atomic.Int32

// NewCodec returns a codec that encodes an event with encode, which must
// not modify the event and may be called from many goroutines. It panics
// past maxCodecs codecs in a program.
func NewCodec[T any](encode func(*Event) T) *Codec[T] {
	slot := int(codecs.Add(1)) - 1
	if slot >= maxCodecs {
		panic(fmt.Sprintf("rooms: more than %d codecs", maxCodecs))
	}
	return &Codec[T]{slot: slot, encode: encode}
}

// Encode returns e in c's wire format, encoding it on the first call for c
// only, however many streams ask at once. What it returns is shared: do not
// modify it.
func (c *Codec[T]) Encode(e *Event) T {
	enc := &e.encoded[c.slot]
	enc.once.Do(func() {
		enc.v = c.encode(e)
		enc.done.Store(true)
	})
	v, _ := enc.v.(T) // the zero T after an encode that panicked
	return v
}

// Made reports whether e's encoding in c is made already, so that a caller
// whose goroutine must stay shallow can have it made elsewhere first.
func (c *Codec[T]) Made(e *Event) bool { return e.encoded[c.slot].done.Load() }

// String names the kind as the event stream's event field does.
func (k EventKind) String() string {
	switch k {
	case EventMessage:
		return "message"
	case EventPresence:
		return "presence"
	case EventReset:
		return "reset"
	case EventClose:
		return "close"
	case EventEdit:
		return "edit"
	case EventDelete:
		return "delete"
	case EventExpired:
		return "expired"
	}
	return "unknown"
}
