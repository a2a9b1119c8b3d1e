// Package events tells the world about what happens to the gateway's
// certificates and callers: Caddy events (the `events` app) and the expiry
// warnings in the log.
package events

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// The Caddy events this project emits.
const (
	RequestRejected     = "mtls_request_rejected"
	CertificateExpiring = "mtls_certificate_expiring"
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
