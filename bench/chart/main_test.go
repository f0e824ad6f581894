package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// TestChartOfTheCommittedResults draws the committed results and checks
// that the chart is an SVG document naming every scenario, with its
// reference where that is not the bare fan-out, and labelling the bars.
func TestChartOfTheCommittedResults(t *testing.T) {
	results := committedResults(t)
	var svg bytes.Buffer
	if err := drawChart(results, &svg); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg.Bytes()))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v", err)
		}
		if start, ok := tok.(xml.StartElement); ok && root == "" {
			root = start.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("the chart's root element is %q, want svg", root)
	}
	// idle-h2: 79.4 against 67.9 KiB.
	if !strings.Contains(svg.String(), ">1.17<") {
		t.Error("the chart does not label idle-h2's bar with its ratio, 1.17")
	}
	for _, r := range results {
		if !strings.Contains(svg.String(), ">"+r.label()+"<") {
			t.Errorf("the chart does not name %s", r.label())
		}
	}
}

// TestCommittedChartIsCurrent holds docs/benchmarks.svg to the results
// file it is drawn from, so that neither is changed without the other.
func TestCommittedChartIsCurrent(t *testing.T) {
	var svg bytes.Buffer
	if err := drawChart(committedResults(t), &svg); err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../../docs/benchmarks.svg")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(svg.Bytes(), committed) {
		t.Error("docs/benchmarks.svg is not the chart of bench/results.tsv: run go run ./bench/chart")
	}
}

// TestHookRowsChart: the rows bench/run.sh keeps for a hook, what it adds
// to a submit against the plugin without it and a webhook's events per
// second against its submits per second, make a chart naming both.
func TestHookRowsChart(t *testing.T) {
	rows := "scenario\tagainst\tmetric\tplugin\treference\n" +
		"submit256-webhook\tplugin\tsubmits/s\t900\t1000\n" +
		"submit256-webhook\tplugin\tCPU µs/submit\t60\t50\n" +
		"submit256-webhook\tplugin\tsubmit p50 ms\t2\t1\n" +
		"submit256-webhook\tplugin\tsubmit p99 ms\t9\t7\n" +
		"submit256-webhook\tsubmits/s\twebhook events/s\t800\t900\n"
	results, err := readResults(strings.NewReader(rows))
	if err != nil {
		t.Fatal(err)
	}
	var svg bytes.Buffer
	if err := drawChart(results, &svg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{">submit256-webhook (vs plugin)<", ">submit256-webhook (vs submits/s)<", ">0.89<", ">latency p50<"} {
		if !strings.Contains(svg.String(), want) {
			t.Errorf("the chart lacks %s", want)
		}
	}
}

func TestResultsThatMakeNoChart(t *testing.T) {
	const header = "scenario\tagainst\tmetric\tplugin\treference\n"
	for _, tc := range []struct {
		name, results, err string
	}{
		{"no header column", "scenario\tmetric\tplugin\n", `no column "reference"`},
		{"no rows", header, "no results"},
		{"a figure that is no number", header + "idle\tbaseline\tRSS KiB/subscriber\t6.7\tn/a\n", "line 2: reference"},
		{"a reference of 0", header + "idle\tbaseline\tRSS KiB/subscriber\t6.7\t0\n", "makes no ratio"},
		{"a metric the chart has no bar for", header + "idle\tbaseline\tRSS MiB\t115\t305\n", `metric "RSS MiB"`},
		{"two figures for one bar", header + "fanout-file\tmemory\tdeliveries/s\t20000\t20000\nfanout-file\tmemory\tsubmits/s\t200\t200\n", "two figures of throughput"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results, err := readResults(strings.NewReader(tc.results))
			if err == nil {
				err = drawChart(results, io.Discard)
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
		})
	}
}

func committedResults(t *testing.T) []result {
	t.Helper()
	f, err := os.Open("../results.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	results, err := readResults(f)
	if err != nil {
		t.Fatal(err)
	}
	return results
}
