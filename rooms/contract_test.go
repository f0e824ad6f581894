package rooms_test

import (
	"testing"

	"github.com/caddy-chat/caddy-chat/rooms"
	"github.com/caddy-chat/caddy-chat/rooms/storetest"
)

// TestContract holds the memory store to the contract of every store.
func TestContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) storetest.Backend {
		return storetest.Backend{Open: func(*testing.T) storetest.Node {
			return storetest.Node{Store: rooms.NewMemoryStore()}
		}}
	})
}
