package handler

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
)

// TestHeaderXFCC: Envoy's x-forwarded-client-cert names the caller by its
// last element (one, or several that each match their Cert); forward xfcc writes one for the backend from the accepted
// certificate (Subject and SANs included).
func TestHeaderXFCC(t *testing.T) {
	p := newPKI(t)
	xfcc := func(leaf []byte) string { return certcodec.Encode(leaf, certcodec.XFCC) }
	for _, format := range []string{"xfcc", "auto"} {
		h := provision(t, headerConfig(p, `{"field":"X-Forwarded-Client-Cert","format":"`+format+`"}`, `{"field":"X-Forwarded-Client-Cert","format":"xfcc"}`))
		// One element, the caller's, as Envoy's SANITIZE_SET writes it.
		value := xfcc(p.valid.Cert.Raw)
		res := serve(h, reqOpts{trusted: true, header: http.Header{"X-Forwarded-Client-Cert": {value}}})
		if res.status != 0 || res.vars["id"] != "alice" || res.vars["source"] != "header" {
			t.Fatalf("%s: status %d (%v), vars %v", format, res.status, res.err, res.vars)
		}
		got := res.upstream.Values("X-Forwarded-Client-Cert")
		if len(got) != 1 || got[0] != certcodec.EncodeCertificate(p.valid.Cert, certcodec.XFCC) {
			t.Fatalf("%s: forwarded %q", format, got)
		}
		for _, want := range []string{"Hash=" + certcodec.Fingerprint(p.valid.Cert.Raw), `;Subject="CN=alice"`, ";URI=spiffe://example/alice", ";DNS=alice.example"} {
			if !strings.Contains(got[0], want) {
				t.Fatalf("%s: forwarded %q lacks %q", format, got[0], want)
			}
		}
		// Several elements (Envoy's APPEND_FORWARD): the caller is the
		// last one.
		res = serve(h, reqOpts{trusted: true, header: http.Header{"X-Forwarded-Client-Cert": {xfcc(p.pinned.Cert.Raw) + "," + value}}})
		if res.status != 0 || res.vars["id"] != "alice" {
			t.Fatalf("%s: two elements: status %d (%v), vars %v", format, res.status, res.err, res.vars)
		}
		// An element without Cert is undecodable, and so is a value of
		// several elements one of which is not its own Cert's (what a
		// SAN holding ',' makes): 400.
		for _, bad := range []string{"By=spiffe://x;Hash=00", "Hash=00;" + xfcc(p.pinned.Cert.Raw)[strings.Index(xfcc(p.pinned.Cert.Raw), "Cert="):] + "," + value} {
			res = serve(h, reqOpts{trusted: true, header: http.Header{"X-Forwarded-Client-Cert": {bad}}})
			if res.status != http.StatusBadRequest {
				t.Fatalf("%s: %.40q: status %d", format, bad, res.status)
			}
		}
	}
}

// TestHeaderTraefikChain: Traefik's comma-separated base64 DER chain, leaf
// first, supplies the intermediate.
func TestHeaderTraefikChain(t *testing.T) {
	p := newPKI(t)
	value := certcodec.Encode(p.viaMid.Cert.Raw, certcodec.Base64DER) + "," + certcodec.Encode(p.mid.Cert.Raw, certcodec.Base64DER)
	for _, format := range []string{"base64_der", "auto"} {
		h := provision(t, headerConfig(p, `{"field":"X-Forwarded-Tls-Client-Cert","format":"`+format+`"}`, ""))
		res := serve(h, reqOpts{trusted: true, header: http.Header{"X-Forwarded-Tls-Client-Cert": {value}}})
		if res.status != 0 || res.vars["id"] != "bob" {
			t.Fatalf("%s: status %d (%v)", format, res.status, res.err)
		}
	}
}

func TestUnmarshalCaddyfileXFCC(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`client_cert_auth {
		trust_pool file /ca.pem
		header X-Forwarded-Client-Cert {
			format xfcc
			from 10.0.0.7
		}
		forward X-Forwarded-Client-Cert xfcc
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if h.Header.Format != "xfcc" || h.Forward.Field != "X-Forwarded-Client-Cert" || h.Forward.Format != "xfcc" {
		t.Fatalf("header %+v, forward %+v", h.Header, h.Forward)
	}
	h = Handler{}
	err = h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("client_cert_auth {\n forward pem X-Cert\n}"))
	if err == nil || !strings.Contains(err.Error(), "xfcc") {
		t.Fatalf("the formats named in the error: %v", err)
	}
}

// TestXFCCWithChainField: format xfcc carries the chain in the element
// itself; a separate chain field is refused at load, not with a 400 on the
// first request that sends it.
func TestXFCCWithChainField(t *testing.T) {
	p := newPKI(t)
	if _, err := tryProvision(headerConfig(p, `{"format":"xfcc","chain":"X-Chain"}`, "")); err == nil || !strings.Contains(err.Error(), "format xfcc carries the chain") {
		t.Fatalf("xfcc with a chain field: %v", err)
	}
}
