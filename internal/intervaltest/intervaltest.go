// Package intervaltest checks that something meant to happen once per
// interval, a heartbeat, did, from times taken where a client reads it.
package intervaltest

import (
	"testing"
	"time"
)

// Check fails t unless gaps, the times between successive events, keep to
// one event per interval: each gap within half an interval of it, and their
// mean within a tenth.
//
// A gap is timed where the client reads it, so it carries the client's
// scheduling delay as well as the server's timing: under -race on a busy
// machine one read can come 200 ms late, making that gap long and the next
// one short. A missed or doubled event still puts a gap outside half an
// interval, and the mean spreads a late read over every gap.
func Check(t testing.TB, what string, gaps []time.Duration, interval time.Duration) {
	t.Helper()
	if len(gaps) == 0 {
		t.Fatalf("no %s to time", what)
		return
	}
	var sum time.Duration
	for i, gap := range gaps {
		sum += gap
		if gap < interval/2 || gap > interval*3/2 {
			t.Errorf("%s %d came %v after the one before, want one every %v", what, i+1, gap, interval)
		}
	}
	if mean := sum / time.Duration(len(gaps)); mean < interval*9/10 || mean > interval*11/10 {
		t.Errorf("%s came every %v on average (%v), want every %v within a tenth", what, mean, gaps, interval)
	}
}
