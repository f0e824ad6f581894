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
