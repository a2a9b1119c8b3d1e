package integration

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestTLSDetails: nginx as the backend reports the protocol and cipher each
// connection got. A profile with `tls_max_version tls1.2` and one OpenSSL
// cipher name (the one nginx's ECDSA key takes) gets exactly TLSv1.2 and
// that cipher; a profile without them, TLSv1.3. The profiles' files are
// given as {env.*} paths, resolved when Caddy loads the config.
func TestTLSDetails(t *testing.T) {
	e := newEnv(t)
	ca := demopki.Must(demopki.NewCA("tls details nginx CA"))
	for name, c := range map[string]*demopki.Cert{
		"tlsd-ca":    ca,
		"tlsd-nginx": demopki.Must(ca.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})),
	} {
		cert, key, err := c.WriteFiles(e.dir, name)
		if err != nil {
			t.Fatal(err)
		}
		e.files[name], e.files[name+"-key"] = cert, key
	}
	t.Setenv("TLSD_DIR", e.dir)

	pinned, open := freePort(t), freePort(t)
	startNginx(t, fmt.Sprintf(`
	server {
		listen 127.0.0.1:%d ssl;
		listen 127.0.0.1:%d ssl;
		server_name localhost;
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_protocols TLSv1.2 TLSv1.3;
		location / {
			return 200 "$ssl_protocol $ssl_cipher";
		}
	}
`, pinned, open, e.path("tlsd-nginx"), e.path("tlsd-nginx-key")), fmt.Sprintf("127.0.0.1:%d", open))

	port := freePort(t)
	startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
(profiles) {
	transport ssl_profiles {
		profile localhost:%[2]d {
			tls_trust_pool file {env.TLSD_DIR}/tlsd-ca.pem
			tls_max_version tls1.2
			tls_ciphers ECDHE-ECDSA-AES256-GCM-SHA384
			tls_curves x25519 p256
			tls_renegotiation never
		}
		profile localhost:%[3]d {
			tls_trust_pool file {env.TLSD_DIR}/tlsd-ca.pem
		}
	}
}
http://127.0.0.1:%[1]d {
	handle /pinned {
		reverse_proxy https://localhost:%[2]d {
			import profiles
		}
	}
	handle /open {
		reverse_proxy https://localhost:%[3]d {
			import profiles
		}
	}
}
`, port, pinned, open), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))

	for path, want := range map[string]string{
		"/pinned": "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384",
		"/open":   "TLSv1.3 ",
	} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(body)
		if resp.StatusCode != http.StatusOK || len(got) < len(want) || got[:len(want)] != want {
			t.Errorf("%s: %d %q, want %q", path, resp.StatusCode, got, want)
		}
	}
}
