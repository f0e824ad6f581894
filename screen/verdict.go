package screen

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Action is what a verdict does with a message.
type Action uint8

// The actions.
const (
	// Allow stores the message as it is.
	Allow Action = iota + 1
	// Refuse stores nothing and tells the poster Verdict.Reason.
	Refuse
	// Replace stores Verdict.Message instead of the text posted.
	Replace
)

// MaxReason is the longest reason a refusal may give, in bytes: the poster
// reads it on the page.
const MaxReason = 1 << 10

// Verdict is the screen's answer.
type Verdict struct {
	Action Action
	// Reason is a refusal's, for the poster; it may be "".
	Reason string
	// Message is a replacement's text.
	Message string
}

// verdictJSON is a verdict as the screen writes it.
type verdictJSON struct {
	Action  string  `json:"action"`
	Reason  string  `json:"reason"`
	Message *string `json:"message"`
}

// ErrBadVerdict is the error of an answer that is no verdict.
var ErrBadVerdict = errors.New("the screen's answer is no verdict")

// ParseVerdict reads the screen's answer: {"action":"allow"},
// {"action":"refuse","reason":"..."} or {"action":"replace","message":"..."}.
// Other fields are ignored, so that a screen may say more for its own
// sake; anything else is ErrBadVerdict.
func ParseVerdict(answer []byte) (Verdict, error) {
	var w verdictJSON
	if err := json.Unmarshal(answer, &w); err != nil {
		return Verdict{}, fmt.Errorf("%w: %w", ErrBadVerdict, err)
	}
	switch w.Action {
	case "allow":
		return Verdict{Action: Allow}, nil
	case "refuse":
		if len(w.Reason) > MaxReason {
			return Verdict{}, fmt.Errorf("%w: a reason of %d bytes, over %d", ErrBadVerdict, len(w.Reason), MaxReason)
		}
		return Verdict{Action: Refuse, Reason: w.Reason}, nil
	case "replace":
		if w.Message == nil {
			return Verdict{}, fmt.Errorf("%w: replace without a message", ErrBadVerdict)
		}
		// The text is checked as a post's is by whoever stores it.
		return Verdict{Action: Replace, Message: *w.Message}, nil
	}
	return Verdict{}, fmt.Errorf("%w: action %q; want allow, refuse or replace", ErrBadVerdict, w.Action)
}
