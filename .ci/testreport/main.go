// Command testreport reads `go test -json` on its standard input and tells
// what a run tested: each package's passed, failed and skipped tests, the
// output of every failure and the reason of every skip. It exits non-zero
// when anything failed, and when anything was skipped, unless the developer
// opted out of the browser tests with CHAT_SKIP_BROWSER=1: a test suite that
// passes by skipping tests nothing.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type counts struct {
	passed, failed, skipped int
	elapsed                 float64
	result                  string // the package's own pass, fail or skip
}

func main() {
	pkgs, failures, skips, err := read(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	os.Exit(report(os.Stdout, pkgs, failures, skips, os.Getenv("CHAT_SKIP_BROWSER") == "1"))
}

// read consumes the events, echoing package results as they come so that a
// long run shows progress. It returns the counts per package, the output of
// each failed test (or failed package, such as a build failure) and the
// reason of each skipped test.
func read(r io.Reader, progress io.Writer) (map[string]*counts, []string, []string, error) {
	pkgs := map[string]*counts{}
	outputs := map[string]*strings.Builder{}
	var failures, skips []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			// go test prints build errors as plain text before the JSON.
			fmt.Fprintln(progress, string(line))
			continue
		}
		c := pkgs[ev.Package]
		if c == nil {
			c = &counts{}
			pkgs[ev.Package] = c
		}
		key := ev.Package + " " + ev.Test
		switch ev.Action {
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(ev.Output)
		case "pass", "fail", "skip":
			out := outputs[key]
			delete(outputs, key)
			if ev.Test == "" {
				c.result, c.elapsed = ev.Action, ev.Elapsed
				fmt.Fprintf(progress, "%-4s %s (%.1fs)\n", ev.Action, ev.Package, ev.Elapsed)
				// A package that failed without a failed test did not
				// build or crashed: its own output says why.
				if ev.Action == "fail" && c.failed == 0 && out != nil {
					failures = append(failures, fmt.Sprintf("--- %s\n%s", ev.Package, lastLines(out.String(), 200)))
				}
				continue
			}
			switch ev.Action {
			case "pass":
				c.passed++
			case "fail":
				c.failed++
				failures = append(failures, fmt.Sprintf("--- FAIL %s %s\n%s", ev.Package, ev.Test, lastLines(out.String(), 200)))
			case "skip":
				c.skipped++
				skips = append(skips, fmt.Sprintf("%s %s: %s", ev.Package, ev.Test, skipReason(out)))
			}
		}
	}
	return pkgs, failures, skips, sc.Err()
}

// report prints the summary and returns the exit code.
func report(w io.Writer, pkgs map[string]*counts, failures, skips []string, skipsAllowed bool) int {
	for _, f := range failures {
		fmt.Fprintln(w, f)
	}
	names := make([]string, 0, len(pkgs))
	for name := range pkgs {
		names = append(names, name)
	}
	slices.Sort(names)
	var total counts
	pkgFailed := false
	fmt.Fprintf(w, "\n%-55s %7s %7s %7s %8s\n", "package", "passed", "failed", "skipped", "time")
	for _, name := range names {
		c := pkgs[name]
		if c.passed+c.failed+c.skipped == 0 && c.result != "fail" {
			continue // a package without tests
		}
		fmt.Fprintf(w, "%-55s %7d %7d %7d %8s\n", name, c.passed, c.failed, c.skipped, time.Duration(c.elapsed*float64(time.Second)).Round(100*time.Millisecond))
		total.passed += c.passed
		total.failed += c.failed
		total.skipped += c.skipped
		pkgFailed = pkgFailed || c.result == "fail"
	}
	for _, s := range skips {
		fmt.Fprintln(w, "SKIPPED", s)
	}
	code := 0
	switch {
	case total.failed > 0 || pkgFailed:
		fmt.Fprintln(w, "\nFAILED")
		code = 1
	case total.skipped > 0 && !skipsAllowed:
		fmt.Fprintf(w, "\nFAILED: %d tests skipped; a run that skips tests nothing (set CHAT_SKIP_BROWSER=1 to opt out of the browser tests knowingly)\n", total.skipped)
		code = 1
	case total.skipped > 0:
		fmt.Fprintf(w, "\n!!! %d TESTS SKIPPED (CHAT_SKIP_BROWSER=1): this run did not test everything !!!\n", total.skipped)
	case total.passed == 0:
		fmt.Fprintln(w, "\nFAILED: no test ran")
		code = 1
	}
	fmt.Fprintf(w, "\ntests: %d passed, %d failed, %d skipped\n", total.passed, total.failed, total.skipped)
	return code
}

// skipReason is the line a skipped test logged last, without the file and
// line prefix.
func skipReason(out *strings.Builder) string {
	if out == nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if strings.HasPrefix(last, "--- SKIP") && len(lines) > 1 {
		last = strings.TrimSpace(lines[len(lines)-2])
	}
	return last
}

// lastLines keeps the end of a long output, where the failure is.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[... %d lines]\n%s", len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}
