// Package trustpool loads the trust pools both sides verify against: one
// of Caddy's tls.ca_pool.source modules, from a config field (provisioned
// with the config) or from a profiles file (provisioned standalone, as the
// file changes while the config runs).
package trustpool

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
)

// Load loads the tls.ca_pool.source module in m's field fieldName
// (a json.RawMessage) and checks that it can verify something.
func Load(ctx caddy.Context, m any, fieldName string) (caddytls.CA, error) {
	if raw, ok := reflect.ValueOf(m).Elem().FieldByName(fieldName).Interface().(json.RawMessage); ok {
		if err := checkFiles(raw); err != nil {
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
	if err := checkNotEmpty(ca); err != nil {
		return nil, err
	}
	return ca, nil
}

// checkNotEmpty refuses a pool that can list its certificates and has
// none: it would trust nothing, silently.
func checkNotEmpty(ca caddytls.CA) error {
	if lister, ok := ca.(caddytls.CertificateProvider); ok && len(lister.Certificates()) == 0 {
		return errors.New("trust pool has no certificates (is the PEM readable and of type CERTIFICATE?)")
	}
	return nil
}

// Files returns the files a trust pool's JSON names (the `file` source's
// pem_files).
func Files(raw json.RawMessage) []string {
	var pool struct {
		PEMFiles []string `json:"pem_files"`
	}
	if raw == nil || json.Unmarshal(raw, &pool) != nil {
		return nil
	}
	return pool.PEMFiles
}

// maxFile bounds a trust pool's PEM file: a bundle of every CA of a
// browser's root program is a few hundred KiB.
const maxFile = 16 << 20

// checkFiles refuses a trust pool whose files are not regular files of at
// most maxFile bytes: Caddy's file source reads them whole, and would wait
// for good on a named pipe.
func checkFiles(raw json.RawMessage) error {
	for _, f := range Files(raw) {
		if err := bounded.CheckRegular(caddy.NewReplacer().ReplaceKnown(f, ""), maxFile); err != nil {
			return err
		}
	}
	return nil
}

// standaloneProviders are the trust pool sources LoadStandalone takes: they
// need nothing from the config's context, so they can be made while the
// config runs, outside its module bookkeeping.
var standaloneProviders = map[string]bool{"file": true, "inline": true}

// LoadStandalone provisions a trust pool module from its JSON without
// registering it with the config's context, for a profiles file, which
// changes while the config runs. It takes the sources that need nothing of
// the config (file, inline). The caller cleans the module up.
func LoadStandalone(ctx caddy.Context, raw json.RawMessage) (caddytls.CA, caddy.Module, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, nil, fmt.Errorf("trust_pool: %w", err)
	}
	var provider string
	if err := json.Unmarshal(fields["provider"], &provider); err != nil || provider == "" {
		return nil, nil, errors.New(`trust_pool: "provider" must name a tls.ca_pool.source module`)
	}
	if !standaloneProviders[provider] {
		return nil, nil, fmt.Errorf("trust_pool provider %q cannot be used in a profiles file (use file or inline)", provider)
	}
	delete(fields, "provider")
	modInfo, err := caddy.GetModule("tls.ca_pool.source." + provider)
	if err != nil {
		return nil, nil, fmt.Errorf("trust_pool: %w", err)
	}
	if err := checkFiles(raw); err != nil {
		return nil, nil, fmt.Errorf("trust_pool %s: %w", provider, err)
	}
	mod := modInfo.New()
	body, _ := json.Marshal(fields)
	if err := caddy.StrictUnmarshalJSON(body, mod); err != nil {
		return nil, nil, fmt.Errorf("trust_pool %s: %w", provider, err)
	}
	if prov, ok := mod.(caddy.Provisioner); ok {
		if err := prov.Provision(ctx); err != nil {
			return nil, mod, fmt.Errorf("trust_pool %s: %w", provider, err)
		}
	}
	if v, ok := mod.(caddy.Validator); ok {
		if err := v.Validate(); err != nil {
			return nil, mod, fmt.Errorf("trust_pool %s: %w", provider, err)
		}
	}
	ca, ok := mod.(caddytls.CA)
	if !ok {
		return nil, mod, fmt.Errorf("trust_pool %s is not a CA pool", provider)
	}
	if err := checkNotEmpty(ca); err != nil {
		return nil, mod, err
	}
	return ca, mod, nil
}
