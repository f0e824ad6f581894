package chat

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/caddy-chat/caddy-chat/proto/chat/v1/chatv1connect"
)

// reflectionPath is where gRPC server reflection (v1) answers, for grpcurl,
// Postman and the like to discover the API. It is a bidirectional stream, so
// it needs HTTP/2.
const reflectionPath = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"

// reflectionServices are the services reflection lists.
var reflectionServices = []string{chatv1connect.ChatServiceName, "grpc.reflection.v1.ServerReflection"}

// newReflectionHandler serves reflection for the chat API: the list of
// services, and the descriptors of the files defining a symbol or named by
// path, with their dependencies.
func newReflectionHandler() *connect.Handler {
	return connect.NewBidiStreamHandler(reflectionPath, func(_ context.Context, stream *connect.BidiStream[reflectionv1.ServerReflectionRequest, reflectionv1.ServerReflectionResponse]) error {
		for {
			req, err := stream.Receive()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			resp := &reflectionv1.ServerReflectionResponse{ValidHost: req.GetHost(), OriginalRequest: req}
			switch mr := req.GetMessageRequest().(type) {
			case *reflectionv1.ServerReflectionRequest_ListServices:
				list := &reflectionv1.ListServiceResponse{}
				for _, name := range reflectionServices {
					list.Service = append(list.Service, &reflectionv1.ServiceResponse{Name: name})
				}
				resp.MessageResponse = &reflectionv1.ServerReflectionResponse_ListServicesResponse{ListServicesResponse: list}
			case *reflectionv1.ServerReflectionRequest_FileByFilename:
				fd, err := protoregistry.GlobalFiles.FindFileByPath(mr.FileByFilename)
				fileResponse(resp, fd, err)
			case *reflectionv1.ServerReflectionRequest_FileContainingSymbol:
				var fd protoreflect.FileDescriptor
				d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(mr.FileContainingSymbol))
				if err == nil {
					fd = d.ParentFile()
				}
				fileResponse(resp, fd, err)
			default:
				resp.MessageResponse = &reflectionv1.ServerReflectionResponse_ErrorResponse{ErrorResponse: &reflectionv1.ErrorResponse{
					ErrorCode: int32(connect.CodeUnimplemented), ErrorMessage: "the chat API has no extensions"}}
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	})
}

// fileResponse sets resp's answer: fd and the files it imports, or err as
// NotFound.
func fileResponse(resp *reflectionv1.ServerReflectionResponse, fd protoreflect.FileDescriptor, err error) {
	if err == nil {
		var files [][]byte
		files, err = withImports(fd, files, map[string]bool{})
		if err == nil {
			resp.MessageResponse = &reflectionv1.ServerReflectionResponse_FileDescriptorResponse{FileDescriptorResponse: &reflectionv1.FileDescriptorResponse{FileDescriptorProto: files}}
			return
		}
	}
	resp.MessageResponse = &reflectionv1.ServerReflectionResponse_ErrorResponse{ErrorResponse: &reflectionv1.ErrorResponse{
		ErrorCode: int32(connect.CodeNotFound), ErrorMessage: err.Error()}}
}

// withImports appends fd and, transitively, its imports to files, each once.
func withImports(fd protoreflect.FileDescriptor, files [][]byte, seen map[string]bool) ([][]byte, error) {
	if seen[fd.Path()] {
		return files, nil
	}
	seen[fd.Path()] = true
	b, err := proto.Marshal(protodesc.ToFileDescriptorProto(fd))
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", fd.Path(), err)
	}
	files = append(files, b)
	imports := fd.Imports()
	for i := range imports.Len() {
		if files, err = withImports(imports.Get(i).FileDescriptor, files, seen); err != nil {
			return nil, err
		}
	}
	return files, nil
}
