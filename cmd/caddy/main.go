// Command caddy is Caddy with its standard modules and the chat plugin: the
// binary for development, tests and benchmarks. Production builds use xcaddy
// (see docs/install.md).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-chat/caddy-chat"
)

func main() {
	caddycmd.Main()
}
