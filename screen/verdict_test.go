package screen

import (
	"errors"
	"testing"
)

func TestParseVerdict(t *testing.T) {
	for answer, want := range map[string]Verdict{
		`{"action":"allow"}`:                            {Action: Allow},
		`{"action":"allow","score":0.1}`:                {Action: Allow},
		`{"action":"refuse"}`:                           {Action: Refuse},
		`{"action":"refuse","reason":"be kind"}`:        {Action: Refuse, Reason: "be kind"},
		`{"action":"replace","message":""}`:             {Action: Replace},
		`{"action":"replace","message":"what the ***"}`: {Action: Replace, Message: "what the ***"},
	} {
		if got, err := ParseVerdict([]byte(answer)); err != nil || got != want {
			t.Errorf("ParseVerdict(%s) = %+v, %v; want %+v", answer, got, err, want)
		}
	}
	for _, bad := range []string{``, `null`, `[]`, `{}`, `{"action":"Allow"}`, `{"action":"replace"}`, `{"action":1}`, `"allow"`} {
		if got, err := ParseVerdict([]byte(bad)); !errors.Is(err, ErrBadVerdict) {
			t.Errorf("ParseVerdict(%s) = %+v, %v; want ErrBadVerdict", bad, got, err)
		}
	}
}

// FuzzParseVerdict: whatever a screen answers, the parser returns a verdict
// whose action is one of the three, with a reason only for a refusal and a
// message only for a replacement, or ErrBadVerdict; it never panics. The
// seeds in testdata/fuzz run with every go test.
func FuzzParseVerdict(f *testing.F) {
	f.Add([]byte(`{"action":"allow"}`))
	f.Fuzz(func(t *testing.T, answer []byte) {
		v, err := ParseVerdict(answer)
		if err != nil {
			if !errors.Is(err, ErrBadVerdict) || v != (Verdict{}) {
				t.Fatalf("ParseVerdict(%q) = %+v, %v", answer, v, err)
			}
			return
		}
		switch {
		case v.Action == Allow && v.Reason == "" && v.Message == "":
		case v.Action == Refuse && len(v.Reason) <= MaxReason && v.Message == "":
		case v.Action == Replace && v.Reason == "":
		default:
			t.Fatalf("ParseVerdict(%q) = %+v", answer, v)
		}
	})
}
