package chat

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-chat/caddy-chat/rooms"
)

// The counters live for the process, not for a config: Caddy gives every
// config a new metrics registry, and the app registers these same counters in
// each, so that they keep counting across reloads.
var (
	messagesTotal   = prometheus.NewCounter(counterOpts("messages_total", "Messages published."))
	deliveriesTotal = prometheus.NewCounter(counterOpts("deliveries_total", "Messages queued for delivery to a stream."))
	evictionsTotal  = prometheus.NewCounter(counterOpts("evictions_total", "Streams ended because they fell too far behind."))
	rejectedTotal   = prometheus.NewCounterVec(counterOpts("rejected_requests_total", "Requests refused, by reason."), []string{"reason"})
	moderationTotal = prometheus.NewCounterVec(counterOpts("moderation_total", "Moderation actions taken, by action."), []string{"action"})

	// Hooks are labeled by kind (screen, webhook) and URL: a handler's
	// hooks are the operator's few, not the callers' many.
	hookCallsTotal    = prometheus.NewCounterVec(counterOpts("hook_calls_total", "Calls made to hooks."), []string{"hook", "url"})
	hookFailuresTotal = prometheus.NewCounterVec(counterOpts("hook_failures_total", "Hook calls that failed: a timeout, a status other than 2xx, an answer too large or unreadable."), []string{"hook", "url"})
	hookSeconds       = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "chat", Name: "hook_duration_seconds",
		Help:    "How long hook calls took, failed or not.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"hook", "url"})
	webhookEventsTotal  = prometheus.NewCounterVec(counterOpts("webhook_events_total", "Events of webhooks, by outcome: delivered, or dropped (a full queue, past the history, given up, or refused with 410)."), []string{"url", "outcome"})
	webhookRetriesTotal = prometheus.NewCounterVec(counterOpts("webhook_retries_total", "Batches posted again after a failure."), []string{"url"})
)

// counterOpts names a counter caddy_chat_<name>.
func counterOpts(name, help string) prometheus.CounterOpts {
	return prometheus.CounterOpts{Namespace: "caddy", Subsystem: "chat", Name: name, Help: help}
}

// registerMetrics adds the chat metrics to a config's registry: the
// process-wide counters, and gauges that read the room manager.
func registerMetrics(reg prometheus.Registerer, m *rooms.Manager) error {
	if reg == nil {
		return nil
	}
	collectors := []prometheus.Collector{
		messagesTotal, deliveriesTotal, evictionsTotal, rejectedTotal, moderationTotal,
		hookCallsTotal, hookFailuresTotal, hookSeconds, webhookEventsTotal, webhookRetriesTotal,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "caddy", Subsystem: "chat", Name: "rooms",
			Help: "Rooms that exist.",
		}, func() float64 { return float64(m.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "caddy", Subsystem: "chat", Name: "subscribers",
			Help: "Open streams, across all rooms.",
		}, func() float64 { return float64(m.Subscribers()) }),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
				continue
			}
			return fmt.Errorf("registering chat metrics: %w", err)
		}
	}
	return nil
}
