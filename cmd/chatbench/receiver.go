package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// hookCounts are what the hooks' receiver (cmd/hookreceiver) was sent so
// far, as its GET /count answers.
type hookCounts struct {
	Events   int64 `json:"events"`
	Screened int64 `json:"screened"`
	Rejected int64 `json:"rejected"`
}

// receiverCounts reads the counts of the receiver at -receiver; none
// without one.
func (o options) receiverCounts(ctx context.Context) (hookCounts, error) {
	var c hookCounts
	if o.receiver == "" {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := strings.TrimSuffix(o.receiver, "/") + "/count"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return c, fmt.Errorf("-receiver: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, fmt.Errorf("reading the receiver's counts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("reading the receiver's counts: GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return c, fmt.Errorf("reading the receiver's counts from %s: %w", url, err)
	}
	return c, nil
}
