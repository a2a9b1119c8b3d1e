package main

import "fmt"

// system is one way of doing the gateway's job. start returns nil, nil for a
// workload the system has no way to do.
type system struct {
	name  string
	start func(wl string, port int) (*proc, error)
	// site is a Caddy system's site block for the TLS path (nil for nginx),
	// for serving two systems from one process.
	site func(port int) string
	// headerSite is its site block for the header path, behind the load
	// balancer (nil: the system has none).
	headerSite func(port int) string
}

// allSystems returns the gateways, all proxying to the mTLS backend on bePort
// and pinned to cpus (empty: not pinned), workers nginx workers: the three
// compared, then, only when named in -systems or -pair, vanilla_copy
// (vanilla_caddy again, to see the spread between two processes of one
// config) and two halves of the plugin for finding where a difference comes
// from (client_cert_auth with the http transport, vanilla Caddy's site with
// ssl_profiles, and vanilla Caddy with the plugin's site mode request), and
// vanilla Caddy with one of Caddy's own handlers (vars) before the proxy.
func allSystems(p *pki, dir, cpus string, workers, bePort int) []system {
	f := p.files
	// The header path: TLS ends at the load balancer in front, which passes
	// the caller's certificate in X-Client-Cert (URL-encoded PEM).
	headerSite := func(auth, transport string) func(port int) string {
		return func(port int) string {
			return fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	%s
	%s
}
`, port, auth, transport)
		}
	}
	// A Caddy system: on the TLS path the gateway terminates the callers'
	// TLS itself with the site's client_auth; header (nil: not run) is its
	// site for the header workload.
	caddySystem := func(name, clientAuth, body string, header func(port int) string) system {
		site := func(port int) string {
			return fmt.Sprintf(`https://localhost:%d {
	tls %s %s {
		client_auth {
			%s
		}
	}
	%s
}
`, port, f["server"], f["server-key"], clientAuth, body)
		}
		return system{name: name, site: site, headerSite: header, start: func(wl string, port int) (*proc, error) {
			if wl == "header" {
				if header == nil {
					return nil, nil
				}
				return startCaddy(dir, name+"-header", cpus, header(port), port)
			}
			return startCaddy(dir, name, cpus, site(port), port)
		}}
	}
	pluginProxy := fmt.Sprintf(`reverse_proxy https://localhost:%[1]d {
		transport ssl_profiles {
			profile localhost:%[1]d {
				tls_trust_pool file %[2]s
				tls_client_auth %[3]s %[4]s
			}
		}
	}`, bePort, f["server-ca"], f["gateway"], f["gateway-key"])
	vanillaProxy := fmt.Sprintf(`reverse_proxy https://localhost:%[1]d {
		transport http {
			tls_trust_pool file %[2]s
			tls_client_auth %[3]s %[4]s
		}
	}`, bePort, f["server-ca"], f["gateway"], f["gateway-key"])
	handler := fmt.Sprintf("client_cert_auth {\n\t\ttrust_pool file %s\n\t}", f["client-ca"])
	requestingSite := "mode request" // the site asks for a certificate, client_cert_auth verifies it
	verifyingSite := "mode require_and_verify\n\t\t\ttrust_pool file " + f["client-ca"]

	return []system{
		caddySystem("plugin", requestingSite, handler+"\n\t"+pluginProxy, headerSite(fmt.Sprintf(`client_cert_auth {
		trust_pool file %s
		header %s {
			format url_pem
			from 127.0.0.1/32
		}
	}`, f["client-ca"], lbCertField), pluginProxy)),
		// Caddy cannot verify a certificate from a header: its header site
		// is the same proxy without any check, to show what the check costs.
		caddySystem("vanilla_caddy", verifyingSite, vanillaProxy, headerSite("", vanillaProxy)),
		{name: "nginx", start: func(wl string, port int) (*proc, error) {
			if wl == "header" {
				return nil, nil
			}
			return startNginx(dir, "gateway", cpus, workers, fmt.Sprintf(`
	upstream backend {
		server 127.0.0.1:%[5]d;
		keepalive 32;
	}
	server {
		listen 127.0.0.1:%[1]d ssl;
		ssl_certificate %[2]s;
		ssl_certificate_key %[3]s;
		ssl_client_certificate %[4]s;
		ssl_verify_client on;
		ssl_verify_depth 2;
		ssl_session_cache off;
		ssl_session_tickets off;
		keepalive_requests 100000;
		location / {
			proxy_pass https://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_ssl_server_name on;
			proxy_ssl_name localhost;
			proxy_ssl_verify on;
			proxy_ssl_trusted_certificate %[6]s;
			proxy_ssl_certificate %[7]s;
			proxy_ssl_certificate_key %[8]s;
			proxy_ssl_session_reuse on;
		}
	}`, port, f["server"], f["server-key"], f["client-ca"], bePort, f["server-ca"], f["gateway"], f["gateway-key"]), port)
		}},
		caddySystem("vanilla_copy", verifyingSite, vanillaProxy, nil), // an A/A control
		caddySystem("handler_only", requestingSite, handler+"\n\t"+vanillaProxy, nil),
		caddySystem("transport_only", verifyingSite, pluginProxy, nil),
		caddySystem("request_site", requestingSite, vanillaProxy, nil), // vanilla with the plugin's site mode
		// vanilla with one of Caddy's own handlers in front of the proxy
		// (vars, which sets one request variable): what a second handler in
		// the route costs, whatever it does.
		caddySystem("vars_handler", verifyingSite, "vars bench 1\n\t"+vanillaProxy, nil),
	}
}

// startLB starts the nginx load balancer of the header workload on lbPort,
// on the load generator's CPUs: it terminates the callers' TLS, asks for a
// client certificate without checking it (the gateway does), and passes it
// on in X-Client-Cert over kept-alive connections to the gateway on gwPort.
func startLB(p *pki, dir string, workers, lbPort, gwPort int) (*proc, error) {
	return startNginx(dir, "lb", "", workers, fmt.Sprintf(`
	upstream gateway {
		server 127.0.0.1:%[2]d;
		keepalive 32;
	}
	server {
		listen 127.0.0.1:%[1]d ssl;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		ssl_client_certificate %[5]s;
		ssl_verify_client optional_no_ca;
		keepalive_requests 100000;
		location / {
			proxy_pass http://gateway;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header %[6]s $ssl_client_escaped_cert;
		}
	}`, lbPort, gwPort, p.files["server"], p.files["server-key"], p.files["client-ca"], lbCertField), lbPort)
}
