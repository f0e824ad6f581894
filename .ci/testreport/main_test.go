package main

import (
	"io"
	"strings"
	"testing"
)

// TestVerdict: a run fails when a test failed, a package did not build, a
// test was skipped (unless skips were allowed) or nothing ran.
func TestVerdict(t *testing.T) {
	const (
		pass      = `{"Action":"pass","Package":"p","Test":"TestA"}` + "\n" + `{"Action":"pass","Package":"p"}`
		fail      = `{"Action":"output","Package":"p","Test":"TestA","Output":"boom\n"}` + "\n" + `{"Action":"fail","Package":"p","Test":"TestA"}` + "\n" + `{"Action":"fail","Package":"p"}`
		buildFail = `{"Action":"output","Package":"p","Output":"syntax error\n"}` + "\n" + `{"Action":"fail","Package":"p"}`
		skip      = `{"Action":"output","Package":"p","Test":"TestB","Output":"    x_test.go:9: no chromium\n"}` + "\n" + `{"Action":"skip","Package":"p","Test":"TestB"}`
	)
	for _, tc := range []struct {
		name         string
		input        string
		skipsAllowed bool
		code         int
		says         string
	}{
		{"all passed", pass, false, 0, "tests: 1 passed, 0 failed, 0 skipped"},
		{"a test failed", pass + "\n" + fail, false, 1, "boom"},
		{"a package did not build", buildFail, false, 1, "syntax error"},
		{"a test skipped", pass + "\n" + skip, false, 1, "no chromium"},
		{"a skip allowed", pass + "\n" + skip, true, 0, "1 TESTS SKIPPED"},
		{"nothing ran", `{"Action":"pass","Package":"p"}`, false, 1, "no test ran"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkgs, failures, skips, err := read(strings.NewReader(tc.input), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			if code := report(&out, pkgs, failures, skips, tc.skipsAllowed); code != tc.code {
				t.Errorf("exit code %d, want %d\n%s", code, tc.code, out.String())
			}
			if !strings.Contains(out.String(), tc.says) {
				t.Errorf("report does not say %q:\n%s", tc.says, out.String())
			}
		})
	}
}
