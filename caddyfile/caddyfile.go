// Package caddyfile holds the Caddyfile grammar that the caddy-mtls modules
// share and registers their directives with Caddy's HTTP Caddyfile adapter.
//
// It depends on no module package of this project: a directive is tied to
// its module by module ID, and the module is looked up in Caddy's registry
// when a Caddyfile is adapted. Module packages can therefore use the grammar
// helpers here without an import cycle.
package caddyfile

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	cf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

func init() {
	RegisterHandlerDirective("client_cert_auth", "http.handlers.client_cert_auth")
	httpcaddyfile.RegisterDirectiveOrder("client_cert_auth", httpcaddyfile.Before, "basic_auth")
}

// RegisterHandlerDirective registers the Caddyfile directive dir for the HTTP
// handler module moduleID, which must implement caddyfile.Unmarshaler.
func RegisterHandlerDirective(dir, moduleID string) {
	httpcaddyfile.RegisterHandlerDirective(dir, func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		mod, err := caddy.GetModule(moduleID)
		if err != nil {
			return nil, h.Errf("directive %s: %v", dir, err)
		}
		inst := mod.New()
		unm, ok := inst.(cf.Unmarshaler)
		if !ok {
			return nil, h.Errf("module %s is not a Caddyfile unmarshaler", moduleID)
		}
		handler, ok := inst.(caddyhttp.MiddlewareHandler)
		if !ok {
			return nil, h.Errf("module %s is not an HTTP handler", moduleID)
		}
		if err := unm.UnmarshalCaddyfile(h.Dispenser); err != nil {
			return nil, err
		}
		return handler, nil
	})
}

// ParseTrustPool parses the arguments and block of a trust pool subdirective,
// `<source> [<args...>] [{ ... }]`, where source names one of Caddy's
// tls.ca_pool.source modules (file, inline, pki_root, storage, http, ...).
// The dispenser must be on the subdirective's name. It returns the module's
// JSON with the "provider" inline key.
func ParseTrustPool(d *cf.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	source := d.Val()
	modID := "tls.ca_pool.source." + source
	if _, err := caddy.GetModule(modID); err != nil && strings.ContainsAny(source, "/\\.") {
		// A path where the source module's name goes: the usual slip.
		return nil, d.Errf("trust pool source '%s' is not a tls.ca_pool.source module: to trust the CAs of a PEM file, write '%s file %s'", source, name, source)
	}
	unm, err := cf.UnmarshalModule(d, modID)
	if err != nil {
		return nil, err
	}
	ca, ok := unm.(caddytls.CA)
	if !ok {
		return nil, d.Errf("module %s is not a trust pool source", modID)
	}
	return caddyconfig.JSONModuleObject(ca, "provider", source, nil), nil
}

// PositiveDuration parses the dispenser's current token as a positive
// duration; what names it in the error.
func PositiveDuration(d *cf.Dispenser, what string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return 0, d.Errf("invalid %s '%s': want a positive duration", what, d.Val())
	}
	return caddy.Duration(dur), nil
}

// OneArg returns the one argument of the current subdirective.
func OneArg(d *cf.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// OneDuration returns the one argument of the current subdirective, a
// positive duration; what names it in the error.
func OneDuration(d *cf.Dispenser, what string) (caddy.Duration, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := PositiveDuration(d, what)
	if err != nil {
		return 0, err
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return dur, nil
}

// OnePositiveInt returns the one argument of the current subdirective, a
// whole number above zero; what names it in the error.
func OnePositiveInt(d *cf.Dispenser, what string) (int, error) {
	arg, err := OneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n <= 0 {
		return 0, d.Errf("invalid %s '%s': want a whole number above zero", what, arg)
	}
	return n, nil
}
