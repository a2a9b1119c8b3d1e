package caddyfile

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
)

// LoadTrustPool loads the tls.ca_pool.source module in m's field fieldName
// (a json.RawMessage) and checks that it can verify something.
func LoadTrustPool(ctx caddy.Context, m any, fieldName string) (caddytls.CA, error) {
	if raw, ok := reflect.ValueOf(m).Elem().FieldByName(fieldName).Interface().(json.RawMessage); ok {
		if err := CheckTrustPoolFiles(raw); err != nil {
			return nil, fmt.Errorf("loading trust pool: %w", err)
		}
	}
	val, err := ctx.LoadModule(m, fieldName)
	if err != nil {
		return nil, fmt.Errorf("loading trust pool: %w", err)
	}
	ca, ok := val.(caddytls.CA)
	if !ok {
		return nil, fmt.Errorf("trust pool module %T is not a caddytls.CA", val)
	}
	if lister, ok := ca.(caddytls.CertificateProvider); ok && len(lister.Certificates()) == 0 {
		return nil, fmt.Errorf("trust pool has no certificates (is the PEM readable and of type CERTIFICATE?)")
	}
	return ca, nil
}

// TrustPoolFiles returns the files a trust pool's JSON names (the `file`
// source's pem_files).
func TrustPoolFiles(raw json.RawMessage) []string {
	var pool struct {
		PEMFiles []string `json:"pem_files"`
	}
	if raw == nil || json.Unmarshal(raw, &pool) != nil {
		return nil
	}
	return pool.PEMFiles
}

// CheckTrustPoolFiles refuses a trust pool whose files are not regular
// files: Caddy's file source reads them whole and would wait for good on a
// named pipe.
func CheckTrustPoolFiles(raw json.RawMessage) error {
	for _, f := range TrustPoolFiles(raw) {
		if err := bounded.CheckRegular(caddy.NewReplacer().ReplaceKnown(f, "")); err != nil {
			return err
		}
	}
	return nil
}
