package proto

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// versionLine is the generated header naming the generators' versions, which
// may differ between machines without the code differing.
var versionLine = regexp.MustCompile(`(?m)^//\s+(protoc|protoc-gen-go|protoc-gen-connect-go)\s.*\n`)

// TestGeneratedCodeIsCurrent regenerates the Go code from chat.proto and
// compares it with the checked-in files. Without the generators it fails:
// ./test.sh installs them at the versions the generated files name.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	for _, tool := range []string{"protoc", "protoc-gen-go", "protoc-gen-connect-go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: ./test.sh installs it", tool)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("protoc", "--go_out="+out, "--go_opt=paths=source_relative",
		"--connect-go_out="+out, "--connect-go_opt=paths=source_relative", "chat/v1/chat.proto")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	for _, file := range []string{"chat/v1/chat.pb.go", "chat/v1/chatv1connect/chat.connect.go"} {
		fresh, err := os.ReadFile(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		current, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(versionLine.ReplaceAll(fresh, nil), versionLine.ReplaceAll(current, nil)) {
			t.Errorf("%s is not what chat.proto generates: run go generate ./proto/", file)
		}
	}
}
