package events

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddy-mtls/caddy-mtls/metrics"
)

// DefaultExpiryWarning is how long before a certificate's end it is
// warned about.
const DefaultExpiryWarning = 30 * 24 * time.Hour

// WarnExpiring logs, and emits as an event, every certificate of owner (as
// it showed them to the metrics) that ends within window. It returns how
// many it warned about.
func WarnExpiring(owner any, window time.Duration, logger *zap.Logger, events *Emitter) int {
	list := metrics.ExpiringBefore(owner, time.Now().Add(window))
	for _, c := range list {
		logger.Warn("certificate expires soon",
			zap.String("kind", c.Kind), zap.String("name", c.Name), zap.Time("not_after", c.NotAfter),
			zap.Duration("left", time.Until(c.NotAfter).Round(time.Second)))
		events.Emit(CertificateExpiring, map[string]any{"kind": c.Kind, "name": c.Name, "not_after": c.NotAfter})
	}
	return len(list)
}

// WatchExpiring warns about owner's expiring certificates now and then
// every day until ctx is done.
func WatchExpiring(ctx caddy.Context, owner any, window time.Duration, logger *zap.Logger, events *Emitter) {
	WarnExpiring(owner, window, logger, events)
	go periodic.Every(ctx, "expiry warnings", logger, 24*time.Hour, func() { WarnExpiring(owner, window, logger, events) })
}
