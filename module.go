// Package caddymtls turns Caddy into an mTLS API gateway. Importing it (one
// `xcaddy build --with github.com/caddy-mtls/caddy-mtls`) brings in every
// module of the project:
//
//   - http.handlers.client_cert_auth (Caddyfile directive client_cert_auth)
package caddymtls

import (
	// The Caddyfile directives.
	_ "github.com/caddy-mtls/caddy-mtls/caddyfile"
	// http.handlers.client_cert_auth
	_ "github.com/caddy-mtls/caddy-mtls/handler"
)
