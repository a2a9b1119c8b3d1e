package metrics

import (
	"sort"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"
)

// DefaultExpiryWarning is how long before a certificate's end it is
// warned about.
const DefaultExpiryWarning = 30 * 24 * time.Hour

// Events are the Caddy events this project emits.
const (
	EventRequestRejected     = "mtls_request_rejected"
	EventCertificateExpiring = "mtls_certificate_expiring"
)

// Emitter emits Caddy events (caddy.events) of a module, when the config has
// the events app and something listens; otherwise it does nothing.
type Emitter struct {
	ctx caddy.Context
	app *caddyevents.App
}

// NewEmitter returns the emitter of a module provisioned with ctx.
func NewEmitter(ctx caddy.Context) *Emitter {
	e := &Emitter{ctx: ctx}
	if app, err := ctx.AppIfConfigured("events"); err == nil {
		e.app, _ = app.(*caddyevents.App)
	}
	return e
}

// Enabled reports whether anything would observe the event name, so that
// callers build its data only then.
func (e *Emitter) Enabled(name string) bool {
	return e != nil && e.app != nil && e.app.ShouldEmit(name)
}

// Emit emits the event name with data.
func (e *Emitter) Emit(name string, data map[string]any) {
	if e.Enabled(name) {
		e.app.Emit(e.ctx, name, data)
	}
}

// WarnExpiring logs, and emits as an event, every certificate of owner that
// ends within window. It returns how many it warned about.
func WarnExpiring(owner any, window time.Duration, logger *zap.Logger, events *Emitter) int {
	type soon struct {
		kind, name string
		notAfter   time.Time
	}
	var list []soon
	deadline := time.Now().Add(window)
	expiry.mu.Lock()
	for kind, names := range expiry.owners[owner] {
		for name, notAfter := range names {
			if notAfter.Before(deadline) {
				list = append(list, soon{kind, name, notAfter})
			}
		}
	}
	expiry.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].notAfter.Before(list[j].notAfter) })
	for _, s := range list {
		logger.Warn("certificate expires soon",
			zap.String("kind", s.kind), zap.String("name", s.name), zap.Time("not_after", s.notAfter),
			zap.Duration("left", time.Until(s.notAfter).Round(time.Second)))
		events.Emit(EventCertificateExpiring, map[string]any{"kind": s.kind, "name": s.name, "not_after": s.notAfter})
	}
	return len(list)
}

// WatchExpiring warns about owner's expiring certificates now and then
// every day until ctx is done.
func WatchExpiring(ctx caddy.Context, owner any, window time.Duration, logger *zap.Logger, events *Emitter) {
	WarnExpiring(owner, window, logger, events)
	go periodic.Every(ctx, "expiry warnings", logger, 24*time.Hour, func() { WarnExpiring(owner, window, logger, events) })
}
