// Package events tells the world about what happens to the gateway's
// certificates and callers: Caddy events (the `events` app) and the expiry
// warnings in the log.
package events

import (
	"encoding/json"

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

// NewEmitter returns the emitter of the module being provisioned with ctx.
//
// Its events name that module as their origin. The events app takes the
// origin from the context's module lineage at the time of the event, and a
// module's provisioning context shares that lineage's storage with the
// next sibling's (Caddy appends to it in place), so that inside a route
// the module after it would be named. The emitter keeps a context of its
// own instead: a new context, in which a small module standing for the
// emitting one is loaded, whose lineage nobody else appends to.
func NewEmitter(ctx caddy.Context) *Emitter {
	app, err := ctx.AppIfConfigured("events")
	if err != nil {
		return &Emitter{}
	}
	e := &Emitter{ctx: ctx}
	e.app, _ = app.(*caddyevents.App)
	if mod := ctx.Module(); mod != nil {
		own, _ := caddy.NewContext(ctx) // a child of ctx: it ends with the config
		cfg, _ := json.Marshal(origin{ID: mod.CaddyModule().ID})
		if v, err := own.LoadModuleByID(originModuleID, cfg); err == nil {
			e.ctx = v.(*origin).ctx
		}
	}
	return e
}

// originModuleID is the module that stands for an emitting module.
const originModuleID = "mtls.events.origin"

func init() {
	caddy.RegisterModule(new(origin))
}

// origin stands for the module whose events an Emitter emits: it names
// itself with that module's ID, and keeps the context it was provisioned
// with, whose lineage ends with it.
type origin struct {
	// The ID of the module it stands for. Default: itself.
	ID caddy.ModuleID `json:"id,omitempty"`

	ctx caddy.Context
}

// CaddyModule returns the module's information, named as the module it
// stands for.
func (o *origin) CaddyModule() caddy.ModuleInfo {
	id := o.ID
	if id == "" {
		id = originModuleID
	}
	return caddy.ModuleInfo{ID: id, New: func() caddy.Module { return new(origin) }}
}

// Provision keeps ctx, for the events.
func (o *origin) Provision(ctx caddy.Context) error {
	o.ctx = ctx
	return nil
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

// Interface guards
var _ caddy.Provisioner = (*origin)(nil)
