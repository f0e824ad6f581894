package intervaltest

import (
	"fmt"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps what Check reports.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

// TestCheckTellsLateReadsFromWrongBeats: one read 200 ms late passes, as
// the CI machine gives under -race; a missed beat, a doubled one and beats a
// fifth late each fail.
func TestCheckTellsLateReadsFromWrongBeats(t *testing.T) {
	const s, ms = time.Second, time.Millisecond
	for _, tc := range []struct {
		name string
		gaps []time.Duration
		fail bool
	}{
		{"on time", []time.Duration{s, s, s}, false},
		{"one read late", []time.Duration{1188 * ms, 830 * ms, 1050 * ms}, false},
		{"a beat missed", []time.Duration{s, 2 * s, s}, true},
		{"a beat doubled", []time.Duration{s, 500 * ms, 500 * ms, s}, true},
		{"every beat late", []time.Duration{1200 * ms, 1200 * ms, 1200 * ms}, true},
		{"every beat early", []time.Duration{800 * ms, 800 * ms, 800 * ms}, true},
		{"nothing to time", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			Check(r, "heartbeat", tc.gaps, s)
			if failed := len(r.failures) > 0; failed != tc.fail {
				t.Errorf("gaps %v: failed %v (%q), want %v", tc.gaps, failed, r.failures, tc.fail)
			}
		})
	}
}
