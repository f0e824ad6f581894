//go:build !linux

package relay

import "net"

// socketOf returns nil: on this system the relay has no write that never
// waits, so each stream's write bursts run in goroutines of their own, as
// over TLS.
func socketOf(net.Conn) socket { return nil }
