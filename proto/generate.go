// Package proto holds the chat's protobuf API and the Go code generated from
// it. Regenerate with go generate ./proto/ after installing protoc,
// protoc-gen-go and protoc-gen-connect-go:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go
//	go install connectrpc.com/connect/cmd/protoc-gen-connect-go
//
// run in the checkout, which builds them at the versions go.mod names.
package proto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --connect-go_out=. --connect-go_opt=paths=source_relative chat/v1/chat.proto
