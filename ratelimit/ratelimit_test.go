package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := New(2, time.Second)
	steps := []struct {
		key       string
		at        time.Duration
		ok        bool
		wantRetry time.Duration
	}{
		{"alice", 0, true, 0},
		{"alice", 100 * time.Millisecond, true, 0},
		{"alice", 400 * time.Millisecond, false, 600 * time.Millisecond},
		{"bob", 400 * time.Millisecond, true, 0},
		{"alice", 999 * time.Millisecond, false, time.Millisecond},
		{"alice", time.Second, true, 0},
		{"alice", 1500 * time.Millisecond, true, 0},
		{"alice", 1600 * time.Millisecond, false, 400 * time.Millisecond},
	}
	for i, s := range steps {
		ok, retry := l.Allow(s.key, t0.Add(s.at))
		if ok != s.ok || retry != s.wantRetry {
			t.Errorf("step %d (%s at %v): ok=%v retry=%v, want %v %v", i, s.key, s.at, ok, retry, s.ok, s.wantRetry)
		}
	}
}

func TestSweepForgetsOldKeys(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := New(1, time.Second)
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k, t0)
	}
	l.Allow("d", t0.Add(3*time.Second))
	if n := l.Len(); n != 1 {
		t.Errorf("%d keys tracked after their windows ended, want 1", n)
	}
}

// TestCounter: a key holds up to the limit at once, keys do not share, and
// a released key is forgotten.
func TestCounter(t *testing.T) {
	c := NewCounter(2)
	steps := []struct {
		op   string // "+" acquires, "-" releases
		key  string
		want bool // for "+"
		keys int  // keys held after the step
	}{
		{"+", "a", true, 1},
		{"+", "a", true, 1},
		{"+", "a", false, 1},
		{"+", "b", true, 2},
		{"-", "a", false, 2},
		{"+", "a", true, 2},
		{"+", "a", false, 2},
		{"-", "a", false, 2},
		{"-", "a", false, 1},
		{"-", "b", false, 0},
		{"+", "b", true, 1},
	}
	for i, s := range steps {
		if s.op == "+" {
			if got := c.Acquire(s.key); got != s.want {
				t.Errorf("step %d: Acquire(%q) = %v, want %v", i, s.key, got, s.want)
			}
		} else {
			c.Release(s.key)
		}
		if n := c.Len(); n != s.keys {
			t.Errorf("step %d: %d keys held, want %d", i, n, s.keys)
		}
	}
}

func TestAddrKey(t *testing.T) {
	tests := map[string]string{
		"192.0.2.7":                     "192.0.2.7",
		"192.0.2.7:51234":               "192.0.2.7",
		"::ffff:192.0.2.7":              "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":          "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff:ffff:1": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:443":         "2001:db8:1:2::/64",
		"2001:db8:1:3::1":               "2001:db8:1:3::/64",
		"fe80::1%eth0":                  "fe80::/64",
		"::1":                           "::/64",
		"not an address":                "not an address",
		"":                              "",
	}
	for addr, want := range tests {
		if got := AddrKey(addr); got != want {
			t.Errorf("AddrKey(%q) = %q, want %q", addr, got, want)
		}
	}
}

// FuzzAddrKey: any input gives a key without panicking, and an address is
// keyed as every other address of its /64 (IPv6) or as itself (IPv4).
func FuzzAddrKey(f *testing.F) {
	for _, s := range []string{"192.0.2.7", "[::1]:80", "2001:db8::1", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4:99999", "[", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		key := AddrKey(addr)
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			return
		}
		ip = ip.Unmap().WithZone("")
		if ip.Is4() {
			if key != ip.String() {
				t.Fatalf("AddrKey(%q) = %q, want %q", addr, key, ip)
			}
			return
		}
		b := ip.As16()
		b[15] ^= 0xff
		b[8] ^= 0x01
		if other := netip.AddrFrom16(b).String(); AddrKey(other) != key {
			t.Fatalf("%q and %q, in one /64, have keys %q and %q", addr, other, key, AddrKey(other))
		}
	})
}
