package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// TestProfileInheritsAutomatedClientCert: a profile without an identity of
// its own presents the base's automated client certificate (tls_client_auth
// with one name: client_certificate_automate),
// which Caddy's internal CA (rooted in a CA the backend trusts) issues and
// renews, as the http transport would.
func TestProfileInheritsAutomatedClientCert(t *testing.T) {
	e := newEnv(t)
	root := demopki.Must(demopki.NewCA("Gateway Clients Root"))
	rootCert, rootKey, err := root.WriteFiles(e.dir, "pki-root")
	if err != nil {
		t.Fatal(err)
	}
	be := testpeer.StartBackend(t, "automated", root)
	serverCA, _, err := be.ServerCA.WriteFiles(e.dir, "automated-server-ca")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := fmt.Sprintf(`{
	admin {admin}
	auto_https off
	local_certs
	skip_install_trust
	pki {
		ca local {
			intermediate_lifetime 20h # within the test root's day
			root {
				cert %[1]s
				key %[2]s
			}
		}
	}
}
http://127.0.0.1:%[3]d {
	reverse_proxy https://localhost:%[4]d {
		transport ssl_profiles {
			tls_client_auth gateway.internal
			profile localhost:%[4]d {
				tls_trust_pool file %[5]s
			}
		}
	}
}
`, rootCert, rootKey, port, be.Port, serverCA)
	c := startCaddy(t, e, cfg, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	client := &http.Client{}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	// The certificate is obtained in the background after the start.
	eventually(t, "the backend accepts the automated client certificate", func() error {
		res := doRawE(client, url)
		if res.err != nil {
			return res.err
		}
		if res.status != http.StatusOK || !strings.HasPrefix(res.body, "automated ") {
			return fmt.Errorf("%d %q", res.status, res.body)
		}
		return nil
	})
	if n := metricValue(t, c, `caddy_mtls_upstream_handshakes_total{identity="default",profile="localhost:`+fmt.Sprint(be.Port)+`",result="ok"}`); n < 1 {
		t.Fatalf("handshakes counted ok: %v", n)
	}
}
