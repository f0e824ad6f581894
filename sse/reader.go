package sse

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
)

// Reader parses an event stream the way a browser's EventSource does (the
// WHATWG "event stream interpretation" rules): lines end in CR, LF or CRLF,
// comments and unknown fields are ignored, an event is dispatched at a blank
// line, and the last event id persists across events until a new one is set.
type Reader struct {
	r           *bufio.Reader
	lastID      string
	started     bool
	pendingCR   bool
	Retry       int // the last valid retry field, in milliseconds; 0 if none
	Comments    int // comment lines seen, heartbeats among them
	lineScratch []byte
}

// NewReader returns a Reader that parses r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReader(r)}
}

// Received is one dispatched event: its type ("message" when the stream gave
// none), its data with lines joined by LF, and the last event id in effect.
type Received struct {
	ID   string
	Name string
	Data string
}

// Next returns the next dispatched event. It returns io.EOF when the stream
// ends; an event not terminated by a blank line is discarded, as the spec says.
func (p *Reader) Next() (Received, error) {
	var (
		data    bytes.Buffer
		hasData bool
		name    string
	)
	for {
		line, err := p.readLine()
		if err != nil {
			return Received{}, err
		}
		if len(line) == 0 {
			if !hasData {
				name = ""
				continue
			}
			ev := Received{ID: p.lastID, Name: name, Data: data.String()}
			if ev.Name == "" {
				ev.Name = "message"
			}
			return ev, nil
		}
		if line[0] == ':' {
			p.Comments++
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			name = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				p.lastID = string(value)
			}
		case "retry":
			if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 && isDigits(value) {
				p.Retry = n
			}
		}
	}
}

// readLine returns the next line without its terminator, treating CR, LF and
// CRLF alike and dropping a leading byte-order mark. It scans the buffered
// bytes in bulk rather than byte by byte.
func (p *Reader) readLine() ([]byte, error) {
	line := p.lineScratch[:0]
	for {
		if _, err := p.r.Peek(1); err != nil {
			return nil, err
		}
		buf, _ := p.r.Peek(p.r.Buffered())
		if p.pendingCR {
			// The previous line ended in CR; an LF right after it belongs to
			// that terminator.
			p.pendingCR = false
			if buf[0] == '\n' {
				p.r.Discard(1)
				continue
			}
		}
		end := bytes.IndexByte(buf, '\n')
		scan := buf
		if end >= 0 {
			scan = buf[:end]
		}
		if cr := bytes.IndexByte(scan, '\r'); cr >= 0 {
			end = cr
			p.pendingCR = true
		}
		if end < 0 {
			line = append(line, buf...)
			p.r.Discard(len(buf))
			continue
		}
		line = append(line, buf[:end]...)
		p.r.Discard(end + 1)
		p.lineScratch = line
		if !p.started {
			p.started = true
			line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
		}
		return line, nil
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
