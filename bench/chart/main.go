// Command chart draws the chart at the top of BENCHMARKS.md from the
// results file that bench/run.sh keeps (bench/results.tsv): for each
// scenario, the plugin's median over its reference's (the bare fan-out,
// the memory store, or SSE over HTTP/2), one bar per measure, against a
// line at 1.0.
//
//	go run ./bench/chart -in bench/results.tsv -out docs/benchmarks.svg
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

func main() {
	in := flag.String("in", "bench/results.tsv", "the results file bench/run.sh keeps")
	out := flag.String("out", "docs/benchmarks.svg", "the SVG file to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		log.Fatal(err)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	results, err := readResults(f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", in, err)
	}
	var svg bytes.Buffer
	if err := drawChart(results, &svg); err != nil {
		return fmt.Errorf("drawing %s: %w", in, err)
	}
	return os.WriteFile(out, svg.Bytes(), 0o644)
}

// result is one row of the results file: the medians of one metric in one
// scenario, for the plugin and for its reference, and what that reference
// is when it is not the bare fan-out ("memory" for the memory store,
// "sse-h2" for SSE streams over HTTP/2).
type result struct {
	scenario, metric  string
	plugin, reference float64
	against           string
}

// readResults reads the tab-separated results: a header row naming the
// columns (scenario, metric, plugin and reference, and optionally against,
// in any order, among others), then a row per scenario and metric. Lines
// starting with # are comments.
func readResults(r io.Reader) ([]result, error) {
	var (
		results []result
		columns map[string]int
	)
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Split(text, "\t")
		if columns == nil {
			columns = map[string]int{}
			for i, name := range fields {
				columns[name] = i
			}
			for _, name := range []string{"scenario", "metric", "plugin", "reference"} {
				if _, ok := columns[name]; !ok {
					return nil, fmt.Errorf("line %d: no column %q in the header", line, name)
				}
			}
			continue
		}
		field := func(name string) string {
			if i, ok := columns[name]; ok && i < len(fields) {
				return fields[i]
			}
			return ""
		}
		res := result{scenario: field("scenario"), metric: field("metric"), against: field("against")}
		if strings.HasSuffix(res.against, "@before") {
			// A change measured against its own past build says nothing
			// of the plugin against a reference: BENCHMARKS.md has it.
			continue
		}
		for name, v := range map[string]*float64{"plugin": &res.plugin, "reference": &res.reference} {
			var err error
			if *v, err = strconv.ParseFloat(field(name), 64); err != nil {
				return nil, fmt.Errorf("line %d: %s: %w", line, name, err)
			}
		}
		if res.reference == 0 {
			return nil, fmt.Errorf("line %d: %s %s: the reference is 0, which makes no ratio", line, res.scenario, res.metric)
		}
		results = append(results, res)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, errors.New("no results")
	}
	return results, nil
}

// label names a scenario on the chart, with its reference where that is
// not the bare fan-out.
func (r result) label() string {
	if r.against == "" || r.against == "baseline" {
		return r.scenario
	}
	return r.scenario + " (vs " + r.against + ")"
}

// measures are the chart's bars, each in its own colour: a scenario of
// submits has its figures drawn where a scenario of deliveries has the
// same kind of figure; a webhook's events per second are its throughput,
// against the submits per second it was sent.
var measures = []struct {
	legend  string
	metrics []string
	color   color.Color
}{
	{"throughput (above 1.0: the plugin does more)", []string{"deliveries/s", "submits/s", "webhook events/s"}, color.RGBA{0, 114, 178, 255}},
	{"CPU per delivery or submit", []string{"CPU µs/delivery", "CPU µs/submit"}, color.RGBA{230, 159, 0, 255}},
	{"latency p50", []string{"submit p50 ms"}, color.RGBA{86, 180, 233, 255}},
	{"latency p99", []string{"p99 ms", "submit p99 ms"}, color.RGBA{204, 121, 167, 255}},
	{"memory (RSS) per subscriber", []string{"RSS KiB/subscriber"}, color.RGBA{0, 158, 115, 255}},
}

// measureOf returns the index in measures of the metric's measure.
func measureOf(metric string) (int, error) {
	for i, m := range measures {
		if slices.Contains(m.metrics, metric) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("metric %q is none the chart draws", metric)
}

const (
	barWidth = vg.Length(5.5)
	groupGap = vg.Length(10)
)

// drawChart writes the SVG of a horizontal grouped bar chart: a group per
// scenario, top to bottom in the order of the results, a bar per measure
// the scenario has, labelled with its ratio.
func drawChart(results []result, w io.Writer) error {
	var groups []string
	figures := map[string][]*result{} // by group, indexed by measure
	for i := range results {
		r := &results[i]
		m, err := measureOf(r.metric)
		if err != nil {
			return fmt.Errorf("%s: %w", r.scenario, err)
		}
		g := r.label()
		if figures[g] == nil {
			groups = append(groups, g)
			figures[g] = make([]*result, len(measures))
		}
		if figures[g][m] != nil {
			return fmt.Errorf("%s has two figures of %s: %s and %s", r.scenario, measures[m].legend, figures[g][m].metric, r.metric)
		}
		figures[g][m] = r
	}

	// Every text takes its font from these when it is made.
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	plotter.DefaultFont = plot.DefaultFont
	p := plot.New()
	p.Title.Text = "caddy-chat / the bare fan-out of the same protocol, or the reference named: medians"
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.X.Label.Text = "below 1.0 the plugin costs less (CPU, p99, memory); for throughput, above 1.0 it does more"
	p.X.Label.TextStyle.Font.Size = vg.Points(9)
	p.Y.Tick.Label.Font.Size = vg.Points(9)
	// The Y axis counts up from the bottom: the first group is drawn at
	// the top.
	names := slices.Clone(groups)
	slices.Reverse(names)
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.5, float64(len(groups))-0.5
	// Vertical lines at the X axis's ticks, and the line at 1.0, behind the
	// bars; horizontal lines would cross them.
	grid := plotter.NewGrid()
	grid.Horizontal.Color = nil
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: p.Y.Min}, {X: 1, Y: p.Y.Max}})
	if err != nil {
		return err
	}
	one.LineStyle.Width = vg.Points(1)
	one.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(grid, one)

	legend := make([]*plotter.BarChart, len(measures))
	maxRatio, mostBars := 1.0, 0
	for i, g := range groups {
		y := float64(len(groups) - 1 - i)
		var present []int
		for m, r := range figures[g] {
			if r != nil {
				present = append(present, m)
			}
		}
		mostBars = max(mostBars, len(present))
		for slot, m := range present {
			r := figures[g][m]
			ratio := r.plugin / r.reference
			maxRatio = max(maxRatio, ratio)
			bar, err := plotter.NewBarChart(plotter.Values{ratio}, barWidth)
			if err != nil {
				return err
			}
			bar.Horizontal = true
			bar.XMin = y
			bar.Color = measures[m].color
			bar.LineStyle.Width = 0
			// A group's bars top to bottom in the order of measures.
			bar.Offset = (vg.Length(len(present)-1)/2 - vg.Length(slot)) * barWidth
			text, err := plotter.NewLabels(plotter.XYLabels{
				XYs:    []plotter.XY{{X: ratio, Y: y}},
				Labels: []string{fmt.Sprintf("%.2f", ratio)},
			})
			if err != nil {
				return err
			}
			text.TextStyle[0].Font.Size = vg.Points(7)
			text.TextStyle[0].YAlign = draw.YCenter
			text.Offset = vg.Point{X: 2, Y: bar.Offset}
			p.Add(bar, text)
			legend[m] = bar
		}
	}
	for m, bar := range legend {
		if bar != nil {
			p.Legend.Add(measures[m].legend, bar)
		}
	}
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	p.Legend.XOffs = -vg.Points(4)
	p.Legend.YOffs = vg.Points(4)
	p.X.Min = 0
	// Room right of the longest bar for its label, and for the legend in
	// the bottom right corner.
	p.X.Max = maxRatio + 1

	height := vg.Length(len(groups))*(vg.Length(mostBars)*barWidth+groupGap) + vg.Inch
	canvas := vgsvg.New(7*vg.Inch, height)
	p.Draw(draw.New(canvas))
	_, err = canvas.WriteTo(w)
	return err
}
