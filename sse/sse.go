// Package sse encodes Server-Sent Events frames as the WHATWG event-stream
// format defines them.
//
// The functions append to a caller's buffer so that a frame can be built once
// and shared by every stream that sends it.
package sse

import (
	"bytes"
	"strconv"
)

// Event is one event-stream frame. Empty fields are left out.
type Event struct {
	ID   string // must not contain CR, LF or NUL
	Name string // must not contain CR or LF
	Data []byte // may span lines; each becomes its own data field
}

// AppendEvent appends the frame for e to dst. Data containing CR, LF or CRLF is
// split into several data fields, which a client joins back with LF, so no
// payload can end the frame early or forge a field.
func AppendEvent(dst []byte, e Event) []byte {
	if e.ID != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, e.ID...)
		dst = append(dst, '\n')
	}
	if e.Name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, e.Name...)
		dst = append(dst, '\n')
	}
	data := e.Data
	for {
		dst = append(dst, "data: "...)
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, data...)
			dst = append(dst, '\n')
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, '\n')
}

// AppendComment appends a comment line, which clients ignore: a heartbeat, or
// the first bytes that push a stream's headers through buffering middleware.
func AppendComment(dst []byte, text string) []byte {
	dst = append(dst, ": "...)
	dst = append(dst, text...)
	return append(dst, "\n\n"...)
}

// AppendRetry appends a retry field, telling the client how many milliseconds
// to wait before reconnecting after the stream ends.
func AppendRetry(dst []byte, milliseconds int) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, int64(milliseconds), 10)
	return append(dst, "\n\n"...)
}
