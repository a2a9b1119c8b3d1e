package handler

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// placeholderNames are the {http.auth.user.*} placeholders the handler sets.
var placeholderNames = []string{"id", "alias", "tier", "subject", "issuer", "serial", "fingerprint", "not_after", "source", "san_dns", "san_uri", "san_email"}

// anonymous holds an empty value for every placeholder, for requests that
// pass without a certificate in optional mode, so that a config using them
// gets empty values rather than the placeholders' own text.
var anonymous = func() map[string]any {
	vals := make(map[string]any, len(placeholderNames))
	for _, name := range placeholderNames {
		vals[name] = ""
	}
	return vals
}()

// identityVarKey is the request variable that holds the request's identity
// slot.
const identityVarKey = "client_cert_auth.identity"

// identitySlot answers the {http.auth.user.*} placeholders of a request.
// One slot is mapped into the request's replacer, by the first
// client_cert_auth the request meets; a later one (a route's, after a
// site-wide one) replaces what it holds, so the last handler's identity
// is the one that counts.
type identitySlot struct {
	vals map[string]any
}

func (s *identitySlot) lookup(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		return nil, false
	}
	val, ok := s.vals[name]
	return val, ok
}

// setIdentity makes vals the request's {http.auth.user.*} placeholders.
func setIdentity(r *http.Request, vals map[string]any) {
	if slot, ok := caddyhttp.GetVar(r.Context(), identityVarKey).(*identitySlot); ok {
		slot.vals = vals
		return
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	slot := &identitySlot{vals: vals}
	caddyhttp.SetVar(r.Context(), identityVarKey, slot)
	repl.Map(slot.lookup)
}
