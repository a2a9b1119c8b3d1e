package upstream

import (
	"crypto/tls"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	mtlscaddyfile "github.com/caddy-mtls/caddy-mtls/caddyfile"
	"github.com/caddy-mtls/caddy-mtls/revocation"
)

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens. Syntax:
//
//	transport ssl_profiles {
//	    # every option of the http transport, the base of every profile
//	    profile <host:port | *.domain:port | host> [...] {
//	        tls_trust_pool           <source> [<args...>]
//	        tls_client_auth          <cert.pem> <key.pem>
//	        tls_client_keystore      <file.p12|file.jks> [type <jks|pkcs12>] [password <secret>] [key_password <secret>] [alias <alias|placeholder>] [default_alias <alias>]
//	        tls_client_keypair       <name>
//	        # paths, key pair names and aliases take {env.*} placeholders, replaced at load
//	        tls_server_name          <name>
//	        tls_min_version          tls1.2 | tls1.3
//	        tls_max_version          tls1.2 | tls1.3
//	        tls_ciphers              <suite...>   # TLS 1.2 suites, IANA or OpenSSL names
//	        tls_curves               <curve...>   # x25519 secp256r1|p256 secp384r1|p384 secp521r1|p521 x25519mlkem768
//	        tls_renegotiation        never | once | freely
//	        tls_verify_hostname      on | off
//	        tls_insecure_skip_verify
//	        revocation {
//	            mode      skip | ignore_ca_error | strict
//	            crl       <file|url> [...]
//	            reload    <interval>
//	            ocsp      [<responder url>]
//	            ocsp_timeout  <duration>
//	            unknown_cache <duration>
//	            leaf_only
//	            crl_from_certificates
//	            crl_timeout   <duration>
//	            crl_max_size  <size>
//	            crl_cache_size <count>
//	        }
//	    }
//	    profiles_file <path> [reload <interval>] {
//	        base_dir <dir>
//	    }
//	    tls_verify_hostname on | off
//	    max_pools     <count>
//	    keypair_refresh <interval>
//	    expiry_warning  <duration>
//	}
//
// `profile` may be repeated; the other subdirectives may be given once.
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume transport name
	nameToken := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}
	var base []caddyfile.Token // the http transport's own subdirectives
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "profiles_file", "keypair_refresh", "expiry_warning", "max_pools", "tls_verify_hostname":
			if seen[sub] {
				return d.Errf("subdirective '%s' given twice", sub)
			}
			seen[sub] = true
		}
		switch sub {
		case "profile":
			p, err := unmarshalProfile(d)
			if err != nil {
				return err
			}
			t.Profiles = append(t.Profiles, p)

		case "profiles_file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			t.ProfilesFile = d.Val()
			if d.NextArg() {
				if d.Val() != "reload" || !d.NextArg() {
					return d.Errf("profiles_file: expected 'reload <interval>' after the path")
				}
				dur, err := mtlscaddyfile.PositiveDuration(d, "reload interval")
				if err != nil {
					return err
				}
				t.ProfilesReload = dur
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := unmarshalProfilesFileBlock(d, t); err != nil {
				return err
			}

		case "tls_verify_hostname":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			t.VerifyHostname = &on

		case "keypair_refresh":
			dur, err := mtlscaddyfile.OneDuration(d, "keypair_refresh")
			if err != nil {
				return err
			}
			t.KeyPairRefresh = dur

		case "expiry_warning":
			dur, err := mtlscaddyfile.OneDuration(d, "expiry_warning")
			if err != nil {
				return err
			}
			t.ExpiryWarning = dur

		case "max_pools":
			n, err := mtlscaddyfile.OnePositiveInt(d, "max_pools")
			if err != nil {
				return err
			}
			t.MaxPools = n

		default:
			base = append(base, d.NextSegment()...)
		}
	}
	if len(base) == 0 {
		return nil
	}
	// Hand the http transport's subdirectives to its own parser, as the
	// block of a transport of their own.
	last := base[len(base)-1]
	open, closing := nameToken, last
	open.Text, closing.Text = "{", "}"
	closing.Line = last.Line + 1
	tokens := append([]caddyfile.Token{nameToken, open}, base...)
	tokens = append(tokens, closing)
	return t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
}

// unmarshalProfilesFileBlock parses the block of profiles_file, if any.
func unmarshalProfilesFileBlock(d *caddyfile.Dispenser, t *Transport) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("profiles_file subdirective '%s' given twice", sub)
		}
		seen[sub] = true
		switch sub {
		case "base_dir":
			dir, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return err
			}
			t.ProfilesBaseDir = dir
		default:
			return d.Errf("unrecognized profiles_file subdirective '%s'", sub)
		}
	}
	return nil
}

// unmarshalProfile parses a profile block; the dispenser is on "profile".
func unmarshalProfile(d *caddyfile.Dispenser) (*Profile, error) {
	p := &Profile{Servers: d.RemainingArgs()}
	if len(p.Servers) == 0 {
		return nil, d.Errf("profile needs at least one server pattern (host:port, *.domain:port or host)")
	}
	for _, s := range p.Servers {
		if _, err := parsePattern(s); err != nil {
			return nil, d.Errf("profile: %v", err)
		}
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("profile subdirective '%s' given twice", sub)
		}
		seen[sub] = true
		switch sub {
		case "tls_trust_pool":
			raw, err := mtlscaddyfile.ParseTrustPool(d)
			if err != nil {
				return nil, err
			}
			p.TrustPoolRaw = raw

		case "tls_client_auth":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.ArgErr()
			}
			p.ClientCertificateFile, p.ClientKeyFile = args[0], args[1]

		case "tls_client_keystore":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args)%2 == 0 {
				return nil, d.Errf("tls_client_keystore: want <file> followed by [type|password|key_password|alias|default_alias <value>] pairs")
			}
			ks := &Keystore{File: args[0]}
			opts := map[string]bool{}
			for i := 1; i < len(args); i += 2 {
				key, val := args[i], args[i+1]
				if opts[key] {
					return nil, d.Errf("tls_client_keystore: '%s' given twice", key)
				}
				opts[key] = true
				switch key {
				case "type":
					ks.Type = val
				case "password":
					ks.Password = val
				case "key_password":
					ks.KeyPassword = val
				case "alias":
					ks.Alias = val
				case "default_alias":
					ks.DefaultAlias = val
				default:
					return nil, d.Errf("tls_client_keystore: unknown option '%s' (want type, password, key_password, alias or default_alias)", key)
				}
			}
			p.ClientKeystore = ks

		case "tls_client_keypair":
			name, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return nil, err
			}
			p.ClientKeyPair = name

		case "tls_server_name":
			name, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return nil, err
			}
			p.ServerName = name

		case "tls_min_version":
			version, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return nil, err
			}
			if v, ok := caddytls.SupportedProtocols[version]; !ok || v < tls.VersionTLS12 {
				return nil, d.Errf("invalid tls_min_version '%s': want tls1.2 or tls1.3", version)
			}
			p.MinVersion = version

		case "tls_max_version":
			version, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return nil, err
			}
			if v, ok := caddytls.SupportedProtocols[version]; !ok || v < tls.VersionTLS12 {
				return nil, d.Errf("invalid tls_max_version '%s': want tls1.2 or tls1.3", version)
			}
			p.MaxVersion = version

		case "tls_ciphers":
			p.Ciphers = d.RemainingArgs()
			if len(p.Ciphers) == 0 {
				return nil, d.ArgErr()
			}
			if _, err := cipherSuiteIDs(p.Ciphers); err != nil {
				return nil, d.Errf("tls_ciphers: %v", err)
			}

		case "tls_curves":
			p.Curves = d.RemainingArgs()
			if len(p.Curves) == 0 {
				return nil, d.ArgErr()
			}
			if _, err := curveIDs(p.Curves); err != nil {
				return nil, d.Errf("tls_curves: %v", err)
			}

		case "tls_renegotiation":
			level, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return nil, err
			}
			if _, err := renegotiation(level); err != nil {
				return nil, d.Errf("invalid tls_renegotiation '%s': want never, once or freely", level)
			}
			p.Renegotiation = level

		case "tls_verify_hostname":
			on, err := onOff(d)
			if err != nil {
				return nil, err
			}
			p.VerifyHostname = &on

		case "revocation":
			p.Revocation = new(revocation.Config)
			if err := p.Revocation.UnmarshalCaddyfile(d); err != nil {
				return nil, err
			}

		case "tls_insecure_skip_verify":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			p.InsecureSkipVerify = true

		default:
			return nil, d.Errf("unrecognized profile subdirective '%s'", sub)
		}
	}
	return p, nil
}

// onOff parses the one argument `on` or `off` of the subdirective the
// dispenser is on.
func onOff(d *caddyfile.Dispenser) (bool, error) {
	sub := d.Val()
	arg, err := mtlscaddyfile.OneArg(d)
	if err != nil {
		return false, err
	}
	switch arg {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("invalid %s '%s': want on or off", sub, arg)
}
