package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSentAt(t *testing.T) {
	tests := []struct {
		data string
		want int64
		ok   bool
	}{
		{`{"id":"e-1","message":"t=1795740000123456789;xxxx","time":"..."}`, 1795740000123456789, true},
		{`{"message":"t=12;"}`, 12, true},
		{`{"message":"hello"}`, 0, false},
		{`{"message":"t=12"}`, 0, false},
		{`{"message":"t=abc;"}`, 0, false},
	}
	for _, tt := range tests {
		got, ok := sentAt(tt.data)
		if got != tt.want || ok != tt.ok {
			t.Errorf("sentAt(%q) = %d, %v; want %d, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSummarize(t *testing.T) {
	file := filepath.Join(t.TempDir(), "runs.jsonl")
	lines := []string{
		`{"label":"fanout/plugin","deliveries_per_sec":100,"cpu_per_delivery_us":10}`,
		`{"label":"fanout/plugin","deliveries_per_sec":300,"cpu_per_delivery_us":30}`,
		`{"label":"fanout/plugin","deliveries_per_sec":200,"cpu_per_delivery_us":20}`,
		`{"label":"fanout/baseline","deliveries_per_sec":100,"cpu_per_delivery_us":40}`,
		`{"label":"fanout-grpc/grpc","cpu_per_delivery_us":12}`,
		`{"label":"fanout-grpc/sse-h2","cpu_per_delivery_us":10}`,
		`not json`,
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := summarize([]string{file}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| fanout | deliveries/s | 200.00 | 100.00 | 2.00x | 3/1 |",
		"| fanout | CPU µs/delivery | 20.00 | 40.00 | 0.50x | 3/1 |",
		"| fanout-grpc (grpc vs sse-h2) | CPU µs/delivery | 12.00 | 10.00 | 1.20x | 1/1 |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "lost") {
		t.Errorf("a metric that is zero for both is shown:\n%s", out.String())
	}
}
