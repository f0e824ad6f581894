package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// metric is one figure of a result, for the summary.
type metric struct {
	name  string
	value func(result) float64
}

var metrics = []metric{
	{"deliveries/s", func(r result) float64 { return r.DeliveriesPerSec }},
	{"latency p50 ms", func(r result) float64 { return r.P50Ms }},
	{"latency p99 ms", func(r result) float64 { return r.P99Ms }},
	{"delete p50 ms", func(r result) float64 { return r.DeleteP50Ms }},
	{"delete p99 ms", func(r result) float64 { return r.DeleteP99Ms }},
	{"CPU µs/delivery", func(r result) float64 { return r.CPUPerDeliveryUs }},
	{"submits/s", func(r result) float64 { return r.SubmitsPerSec }},
	{"submit p50 ms", func(r result) float64 { return r.SubmitP50Ms }},
	{"submit p99 ms", func(r result) float64 { return r.SubmitP99Ms }},
	{"CPU µs/submit", func(r result) float64 { return r.CPUPerSubmitUs }},
	{"fsyncs/submit", func(r result) float64 { return r.FsyncsPerSubmit }},
	{"webhook events/s", func(r result) float64 { return r.WebhookEventsPerSec }},
	{"screen calls/s", func(r result) float64 { return r.ScreenedPerSec }},
	{"RSS KiB/subscriber", func(r result) float64 { return r.RSSPerSubKiB }},
	{"RSS end MiB", func(r result) float64 { return r.RSSEndMiB }},
	{"lost", func(r result) float64 { return float64(r.Lost) }},
	{"duplicates", func(r result) float64 { return float64(r.Duplicates) }},
	{"out of order", func(r result) float64 { return float64(r.OutOfOrder) }},
}

// summarize reads the JSON lines of runs labelled "<scenario>/<server>" and
// prints, per scenario, the median of each metric for the server measured
// and its reference, and their ratio. The plugin is measured against every
// other server of its scenario: "baseline", and others that the scenario's
// cell names (fanout-grpc: "plugin vs sse-h2" too). In a scenario named
// for one of its servers (fanout-file: "file" against "memory";
// fanout-webhook: "webhook" against "plugin"), that server is measured
// against the others. Other scenarios are left out.
func summarize(files []string, w io.Writer) error {
	runs := map[string][]result{}
	var scenarios []string
	servers := map[string][]string{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r result
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			scenario, server, _ := strings.Cut(r.Label, "/")
			if !slices.Contains(scenarios, scenario) {
				scenarios = append(scenarios, scenario)
			}
			if !slices.Contains(servers[scenario], server) {
				servers[scenario] = append(servers[scenario], server)
			}
			runs[r.Label] = append(runs[r.Label], r)
		}
		f.Close()
	}
	fmt.Fprintf(w, "| scenario | metric | plugin | baseline | plugin / baseline | runs |\n|---|---|---|---|---|---|\n")
	for _, scenario := range scenarios {
		s := servers[scenario]
		// A label may say how its servers ran after the scenario's name:
		// "fanout-file (GODEBUG=...)".
		base, _, _ := strings.Cut(scenario, " ")
		measured := "plugin"
		if _, suffix, ok := strings.Cut(base, "-"); ok && slices.Contains(s, suffix) {
			measured = suffix
		} else if !slices.Contains(s, "plugin") { // nodes: bench/run.sh sums these up itself
			continue
		}
		references := slices.DeleteFunc(slices.Clone(s), func(server string) bool { return server == measured })
		for _, reference := range references {
			name := scenario
			if reference != "baseline" {
				name = fmt.Sprintf("%s (%s vs %s)", scenario, measured, reference)
			}
			printPair(w, name, runs[scenario+"/"+measured], runs[scenario+"/"+reference])
		}
	}
	return nil
}

// printPair prints the rows of the measured server's runs against the
// reference's.
func printPair(w io.Writer, name string, measured, reference []result) {
	for _, m := range metrics {
		p, b := median(measured, m.value), median(reference, m.value)
		if p == 0 && b == 0 {
			continue
		}
		ratio := "-"
		if b != 0 {
			ratio = fmt.Sprintf("%.2fx", p/b)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %s | %d/%d |\n", name, m.name, p, b, ratio, len(measured), len(reference))
	}
}

func median(rs []result, value func(result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = value(r)
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}
