package handler

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string // the handler's JSON
	}{
		{"pinned only", `client_cert_auth {
			client partner /etc/partner.pem tier gold
			client other /etc/other.pem
		}`, `{"clients":[{"alias":"partner","tier":"gold","certificate_file":"/etc/partner.pem"},{"alias":"other","certificate_file":"/etc/other.pem"}]}`},
		{"trust pool with block", `client_cert_auth {
			mode optional
			trust_pool file /etc/ca.pem {
				pem_file /etc/ca2.pem
			}
		}`, `{"mode":"optional","trust_pool":{"pem_files":["/etc/ca.pem","/etc/ca2.pem"],"provider":"file"}}`},
		{"header defaults", `client_cert_auth {
			trust_pool file /ca.pem
			header {
				from 10.0.0.7
			}
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"header":{"from":["10.0.0.7"]}}`},
		{"header from a load balancer's certificate and private ranges", `client_cert_auth {
			trust_pool file /ca.pem
			header {
				from private_ranges trusted_proxies
				from_client_certificate file /lb-ca.pem
			}
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"header":{"from":["private_ranges","trusted_proxies"],"from_client_certificate":{"pem_files":["/lb-ca.pem"],"provider":"file"}}}`},
		{"header from a load balancer's certificate only", `client_cert_auth {
			trust_pool file /ca.pem
			header X-Client-Cert {
				from_client_certificate file /lb-ca.pem
			}
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"header":{"field":"X-Client-Cert","from_client_certificate":{"pem_files":["/lb-ca.pem"],"provider":"file"}}}`},
		{"header in full", `client_cert_auth {
			trust_pool file /ca.pem
			header X-SSL-Client-Cert {
				format url_pem
				chain
				from 10.0.0.0/8 192.168.1.10
			}
			forward
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"header":{"field":"X-SSL-Client-Cert","format":"url_pem","chain":"Client-Cert-Chain","from":["10.0.0.0/8","192.168.1.10"]},"forward":{}}`},
		{"header from trusted_proxies, named chain", `client_cert_auth {
			trust_pool file /ca.pem
			header {
				chain X-Chain
				from trusted_proxies
			}
			forward X-Client-Cert pem
			cache_size 500
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"header":{"chain":"X-Chain","from":["trusted_proxies"]},"forward":{"field":"X-Client-Cert","format":"pem"},"cache_size":500}`},
		{"clients from storage", `client_cert_auth {
			clients_from_storage refresh 5s
		}`, `{"clients_from_storage":{"refresh":5000000000}}`},
		{"clients from storage, groups", `client_cert_auth {
			clients_from_storage refresh 5s {
				group payments billing
			}
		}`, `{"clients_from_storage":{"refresh":5000000000,"groups":["payments","billing"]}}`},
		{"clients from storage, groups without refresh", `client_cert_auth {
			clients_from_storage {
				group b
			}
		}`, `{"clients_from_storage":{"groups":["b"]}}`},
		{"client alias repeated for rotation", `client_cert_auth {
			client a /old.pem tier gold
			client a /new.pem
		}`, `{"clients":[{"alias":"a","tier":"gold","certificate_file":"/old.pem"},{"alias":"a","certificate_file":"/new.pem"}]}`},
		{"clients from storage, default refresh", `client_cert_auth {
			trust_pool file /ca.pem
			clients_from_storage
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"clients_from_storage":{}}`},
		{"revocation", `client_cert_auth {
			trust_pool file /ca.pem
			revocation {
				mode strict
				crl /a.crl http://pki.example/b.crl
				crl /c.crl
				reload 10m
				ocsp http://ocsp.example
				ocsp_timeout 3s
				leaf_only
			}
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"revocation":{"mode":"strict","crl":["/a.crl","http://pki.example/b.crl","/c.crl"],"reload":600000000000,"ocsp":true,"ocsp_responder":"http://ocsp.example","ocsp_timeout":3000000000,"leaf_only":true}}`},
		{"forward format only", `client_cert_auth {
			trust_pool file /ca.pem
			forward base64_der
		}`, `{"trust_pool":{"pem_files":["/ca.pem"],"provider":"file"},"forward":{"format":"base64_der"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, string(got), tc.want) {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct{ name, input, want string }{
		{"argument on directive", `client_cert_auth foo`, "wrong argument count"},
		{"unknown subdirective", "client_cert_auth {\n trust_pol file /ca.pem\n}", "unrecognized subdirective 'trust_pol'"},
		{"repeated mode", "client_cert_auth {\n mode require\n mode optional\n}", "'mode' given twice"},
		{"repeated trust_pool", "client_cert_auth {\n trust_pool file /a.pem\n trust_pool file /b.pem\n}", "'trust_pool' given twice"},
		{"repeated header", "client_cert_auth {\n header {\n from 10.0.0.7\n }\n header\n}", "'header' given twice"},
		{"header without from", "client_cert_auth {\n header X-Client-Cert\n}", "say who may set it"},
		{"header block without from", "client_cert_auth {\n header {\n format pem\n }\n}", "say who may set it"},
		{"from_client_certificate without source", "client_cert_auth {\n header {\n from_client_certificate\n }\n}", "wrong argument count"},
		{"bad mode", "client_cert_auth {\n mode maybe\n}", "invalid mode 'maybe'"},
		{"mode without value", "client_cert_auth {\n mode\n}", "wrong argument count"},
		{"unknown trust pool source", "client_cert_auth {\n trust_pool nosuch\n}", "tls.ca_pool.source.nosuch"},
		{"trust pool without source", "client_cert_auth {\n trust_pool\n}", "wrong argument count"},
		{"trust pool file without files", "client_cert_auth {\n trust_pool file\n}", "no certificates specified"},
		{"client without file", "client_cert_auth {\n client partner\n}", "wrong argument count"},
		{"client with stray word", "client_cert_auth {\n client partner /p.pem level gold\n}", "unexpected 'level'"},
		{"client same alias and file", "client_cert_auth {\n client a /a.pem\n client a /a.pem\n}", "client alias 'a' given twice with certificate '/a.pem'"},
		{"client repeated alias other tier", "client_cert_auth {\n client a /a.pem tier gold\n client a /b.pem tier silver\n}", "want its first tier 'gold'"},
		{"clients_from_storage group without names", "client_cert_auth {\n clients_from_storage {\n group\n }\n}", "wrong argument count"},
		{"clients_from_storage bad group", "client_cert_auth {\n clients_from_storage {\n group a/b\n }\n}", "group 'a/b'"},
		{"clients_from_storage group twice", "client_cert_auth {\n clients_from_storage {\n group a\n group b\n }\n}", "'group' given twice"},
		{"clients_from_storage unknown sub", "client_cert_auth {\n clients_from_storage {\n groups a\n }\n}", "unrecognized clients_from_storage subdirective 'groups'"},
		{"header bad field", "client_cert_auth {\n header Bad:Field\n}", "header field 'Bad:Field'"},
		{"header two fields", "client_cert_auth {\n header A B\n}", "wrong argument count"},
		{"header unknown sub", "client_cert_auth {\n header {\n encoding pem\n }\n}", "unrecognized header subdirective 'encoding'"},
		{"header bad format", "client_cert_auth {\n header {\n format der\n }\n}", "invalid format 'der'"},
		{"header repeated format", "client_cert_auth {\n header {\n format pem\n format pem\n }\n}", "'format' given twice"},
		{"from not a CIDR", "client_cert_auth {\n header {\n from 10.0.0.0/33\n }\n}", "invalid from range '10.0.0.0/33'"},
		{"from a hostname", "client_cert_auth {\n header {\n from lb.example\n }\n}", "invalid from range 'lb.example'"},
		{"from empty", "client_cert_auth {\n header {\n from\n }\n}", "wrong argument count"},
		{"forward auto", "client_cert_auth {\n forward auto\n}", "format auto is for reading"},
		{"forward too many", "client_cert_auth {\n forward A pem B\n}", "wrong argument count"},
		{"forward format then field", "client_cert_auth {\n forward pem X-Cert\n}", "'X-Cert' is not a format"},
		{"expiry_warning bad", "client_cert_auth {\n expiry_warning soon\n}", "invalid expiry_warning 'soon'"},
		{"clients_from_storage bad word", "client_cert_auth {\n clients_from_storage every 5s\n}", "expected 'refresh <interval>'"},
		{"clients_from_storage bad interval", "client_cert_auth {\n clients_from_storage refresh soon\n}", "invalid refresh interval 'soon'"},
		{"revocation without crl", "client_cert_auth {\n revocation {\n mode strict\n }\n}", "revocation needs a crl or ocsp"},
		{"revocation bad mode", "client_cert_auth {\n revocation {\n mode hard\n crl /a\n }\n}", "invalid revocation mode 'hard'"},
		{"revocation ocsp timeout", "client_cert_auth {\n revocation {\n ocsp\n ocsp_timeout never\n }\n}", "invalid ocsp_timeout 'never'"},
		{"revocation unknown", "client_cert_auth {\n revocation {\n crls /a\n }\n}", "unrecognized revocation subdirective 'crls'"},
		{"cache_size zero", "client_cert_auth {\n cache_size 0\n}", "invalid cache_size '0'"},
		{"cache_size word", "client_cert_auth {\n cache_size lots\n}", "invalid cache_size 'lots'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Fatalf("error %q does not name the line", err)
			}
		})
	}
}
