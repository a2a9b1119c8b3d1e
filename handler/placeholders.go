package handler

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// placeholderNames are the {http.auth.user.*} placeholders the handler sets.
var placeholderNames = []string{"id", "alias", "tier", "subject", "issuer", "serial", "fingerprint", "not_after", "source", "san_dns", "san_uri", "san_email"}

// identity is what the placeholders tell of an accepted caller, boxed once
// (when the verdict is made), so that answering a placeholder costs no
// allocation.
type identity struct {
	id, alias, tier, subject, issuer, serial, fingerprint, notAfter, sanDNS, sanURI, sanEmail any
}

// anonymous answers every placeholder with an empty value, for requests that
// pass without a certificate in optional mode, so that a config using them
// gets empty values rather than the placeholders' own text.
var anonymous = &identity{"", "", "", "", "", "", "", "", "", "", ""}

var (
	emptySource any = ""
	sourceNames     = [2]any{sourceTLS.String(), sourceHeader.String()}
)

// identityVarKey is the request variable that holds the request's identity
// slot.
const identityVarKey = "client_cert_auth.identity"

// identitySlot answers the {http.auth.user.*} placeholders of a request.
// One slot is mapped into the request's replacer, by the first
// client_cert_auth the request meets; a later one (a route's, after a
// site-wide one) replaces what it holds, so the last handler's identity
// is the one that counts.
type identitySlot struct {
	id     *identity
	source any
}

func (s *identitySlot) lookup(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		return nil, false
	}
	id := s.id
	switch name {
	case "id":
		return id.id, true
	case "alias":
		return id.alias, true
	case "tier":
		return id.tier, true
	case "subject":
		return id.subject, true
	case "issuer":
		return id.issuer, true
	case "serial":
		return id.serial, true
	case "fingerprint":
		return id.fingerprint, true
	case "not_after":
		return id.notAfter, true
	case "source":
		return s.source, true
	case "san_dns":
		return id.sanDNS, true
	case "san_uri":
		return id.sanURI, true
	case "san_email":
		return id.sanEmail, true
	}
	return nil, false
}

// setIdentity makes id, from source (nil: none), the request's
// {http.auth.user.*} placeholders.
func setIdentity(r *http.Request, id *identity, source any) {
	if source == nil {
		source = emptySource
	}
	if slot, ok := caddyhttp.GetVar(r.Context(), identityVarKey).(*identitySlot); ok {
		slot.id, slot.source = id, source
		return
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	slot := &identitySlot{id: id, source: source}
	caddyhttp.SetVar(r.Context(), identityVarKey, slot)
	repl.Map(slot.lookup)
}
