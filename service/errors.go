package service

import (
	"errors"
	"time"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// Kind is what a refusal is, whatever the protocol: each adapter answers a
// kind with its status or code, from one table of its own.
type Kind uint8

// The kinds of refusals.
const (
	// Invalid is bad input: a name, a parameter, a body.
	Invalid Kind = iota + 1
	// Unauthenticated asks the caller to sign in.
	Unauthenticated
	// Forbidden is an act this caller may not do here.
	Forbidden
	// NotFound is a room, a message or a file that does not exist.
	NotFound
	// MethodNotAllowed is an HTTP method the route does not take; Allow
	// names those it does.
	MethodNotAllowed
	// TooLarge is a message or body over its limit.
	TooLarge
	// UnsupportedType is a body in an encoding the API does not read.
	UnsupportedType
	// Conflict is an idempotency key reused for another message, or a
	// room that holds the most bans allowed.
	Conflict
	// RateLimited is a client past a limit of its own, for RetryAfter.
	RateLimited
	// Capacity is a server-wide limit reached, for RetryAfter.
	Capacity
	// Unavailable is a server that cannot answer now: stopping, or its
	// store out of reach. Clients retry it.
	Unavailable
)

// Error is a refusal the caller can act on.
type Error struct {
	Kind Kind
	// Reason labels the refusal in metrics where the kind alone is too
	// coarse ("name_reserved", "too_many_streams"); empty for the kind's
	// own label.
	Reason     string
	Message    string        // for a person: what is wrong
	RetryAfter time.Duration // when to try again, for RateLimited, Capacity and Unavailable
	Allow      string        // the methods the route takes, for MethodNotAllowed
	Room       string        // the room a grant is missing for
	Why        string        // what failed in an invalid token
	Cause      error         // what the operator must know, for the log; never sent
}

func (e *Error) Error() string { return e.Message }

// Refuse returns a refusal of kind with message.
func Refuse(kind Kind, message string) *Error {
	return &Error{Kind: kind, Message: message}
}

// CapacityRetry is the wait a refusal of a capacity limit asks for.
const CapacityRetry = 5 * time.Second

// roomsError turns an error of the rooms into a refusal, or returns it as
// it is when it is none.
func roomsError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rooms.ErrInvalidName):
		return Refuse(Invalid, err.Error())
	case errors.Is(err, rooms.ErrNoMessage):
		return noMessage()
	case errors.Is(err, rooms.ErrNotFound), errors.Is(err, rooms.ErrBanNotFound):
		return Refuse(NotFound, err.Error())
	case errors.Is(err, rooms.ErrKeyReused):
		return Refuse(Conflict, err.Error())
	case errors.Is(err, rooms.ErrTooManyBans):
		// 409, not 507: the room's bans, not the server, are in the
		// way, and lifting some clears it.
		return &Error{Kind: Conflict, Reason: "too_many_bans", Message: err.Error()}
	case errors.Is(err, rooms.ErrNameReserved):
		return &Error{Kind: Forbidden, Reason: "name_reserved", Message: err.Error()}
	case errors.Is(err, rooms.ErrClosed):
		return &Error{Kind: Unavailable, Reason: "stopping", Message: err.Error(), RetryAfter: CapacityRetry}
	case errors.Is(err, rooms.ErrTooManyRooms), errors.Is(err, rooms.ErrTooManySubscribers):
		return &Error{Kind: Capacity, Message: err.Error(), RetryAfter: CapacityRetry}
	case errors.Is(err, rooms.ErrUnavailable):
		// The details name the store's file or address: they are for
		// the log.
		return &Error{Kind: Unavailable, Reason: "store_unavailable", Message: rooms.ErrUnavailable.Error(), RetryAfter: CapacityRetry, Cause: err}
	}
	return err
}

// IsKind reports whether err is a refusal of kind.
func IsKind(err error, kind Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}
