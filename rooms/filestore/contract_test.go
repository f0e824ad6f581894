package filestore

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddy-chat/caddy-chat/rooms/storetest"
)

// TestContract holds the file store to the contract of every store: each
// data set is a file of its own, which a restart opens again.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		path := filepath.Join(t.TempDir(), "chat.db")
		return storetest.Backend{Durable: true, Open: func(t *testing.T) storetest.Node {
			s := openStore(t, path)
			return storetest.Node{Store: s, Close: s.Close, Dump: func(t *testing.T) []byte {
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}}
		}}
	})
}
