// Package caddymtls turns Caddy into an mTLS API gateway. Importing it (one
// `xcaddy build --with github.com/caddy-mtls/caddy-mtls`) brings in every
// module of the project:
//
//   - http.handlers.client_cert_auth (Caddyfile directive client_cert_auth)
//   - http.reverse_proxy.transport.ssl_profiles (reverse_proxy's transport ssl_profiles)
//   - admin.api.mtls (routes under /mtls/ on the admin endpoint)
//
// and the `caddy mtls` command.
package caddymtls

import (
	// admin.api.mtls
	_ "github.com/caddy-mtls/caddy-mtls/adminapi"
	// The Caddyfile directives.
	_ "github.com/caddy-mtls/caddy-mtls/caddyfile"
	// caddy mtls
	_ "github.com/caddy-mtls/caddy-mtls/mtlscmd"
	// http.handlers.client_cert_auth
	_ "github.com/caddy-mtls/caddy-mtls/handler"
	// http.reverse_proxy.transport.ssl_profiles
	_ "github.com/caddy-mtls/caddy-mtls/upstream"
)
