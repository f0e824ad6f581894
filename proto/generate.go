// Package proto holds the chat's protobuf API and the Go code generated from
// it. Regenerate with go generate ./proto/ after installing protoc,
// protoc-gen-go and protoc-gen-connect-go:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
package proto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --connect-go_out=. --connect-go_opt=paths=source_relative chat/v1/chat.proto
