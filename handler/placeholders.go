package handler

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// The {http.auth.user.*} placeholders the handler sets, in the order of an
// identity's values.
const (
	phID = iota
	phAlias
	phTier
	phSubject
	phIssuer
	phSerial
	phFingerprint
	phNotAfter
	phSource
	phSANDNS
	phSANURI
	phSANEmail
	numPlaceholders
)

// placeholderNames are the placeholders' names after http.auth.user.
var placeholderNames = [numPlaceholders]string{"id", "alias", "tier", "subject", "issuer", "serial", "fingerprint", "not_after", "source", "san_dns", "san_uri", "san_email"}

// placeholderIndex finds a placeholder's value by its name.
var placeholderIndex = func() map[string]int {
	m := make(map[string]int, numPlaceholders)
	for i, name := range placeholderNames {
		m[name] = i
	}
	return m
}()

// identity is what the placeholders tell of an accepted caller, boxed once
// (when the verdict is made), so that answering a placeholder costs no
// allocation.
type identity [numPlaceholders]any

// anonymous answers every placeholder with an empty value, for requests that
// pass without a certificate in optional mode, so that a config using them
// gets empty values rather than the placeholders' own text.
var anonymous = func() *identity {
	var id identity
	for i := range id {
		id[i] = ""
	}
	return &id
}()

// identityVarKey is the request variable that holds the request's identity.
const identityVarKey = "client_cert_auth.identity"

// lookupIdentity answers the {http.auth.user.*} placeholders from the
// identity in vars.
func lookupIdentity(vars map[string]any, key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		return nil, false
	}
	id, ok := vars[identityVarKey].(*identity)
	if !ok {
		return nil, false
	}
	i, ok := placeholderIndex[name]
	if !ok {
		return nil, false
	}
	return id[i], true
}

// setIdentity makes id the {http.auth.user.*} placeholders of the request,
// whose vars are given. The first client_cert_auth a request meets maps them
// into its replacer; a later one (a route's, after a site-wide one) replaces
// the identity they answer from, so the last handler's identity counts. An
// accepted caller also clears the static values an earlier authenticator set
// under the same names (basic_auth's http.auth.user.id), which the replacer
// would answer first: they would name someone else.
func setIdentity(r *http.Request, vars map[string]any, id *identity) {
	if vars == nil {
		return
	}
	_, mapped := vars[identityVarKey].(*identity) // not whatever a vars directive put there
	vars[identityVarKey] = id
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	if id != anonymous {
		repl.DeleteByPrefix("http.auth.user.")
	}
	if !mapped {
		repl.Map(func(key string) (any, bool) { return lookupIdentity(vars, key) })
	}
}
