package handler

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	mtlscaddyfile "github.com/caddy-mtls/caddy-mtls/caddyfile"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/revocation"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	client_cert_auth [<matcher>] {
//	    mode        require | optional
//	    trust_pool  <source> [<args...>]
//	    client      <alias> <cert.pem> [tier <tier>]
//	    clients_from_storage [refresh <interval>] {
//	        group <name...>
//	        full_refresh <interval>
//	    }
//	    header      [<field>] {
//	        format  auto | rfc9440 | url_pem | pem | base64_der | xfcc
//	        chain   [<field>]
//	        from    <cidr...> | private_ranges | trusted_proxies
//	        from_client_certificate <source> [<args...>]
//	    }
//	    revocation {
//	        mode      skip | ignore_ca_error | strict
//	        crl       <file|url> [...]
//	        reload    <interval>
//	        ocsp      [<responder url>]
//	        ocsp_timeout <duration>
//	        unknown_cache <duration>
//	        leaf_only
//	        crl_from_certificates
//	        crl_timeout   <duration>
//	        crl_max_size  <size>
//	        crl_cache_size <count>
//	    }
//	    forward     [<field>] [<format>]
//	    cache_size  <entries>
//	    expiry_warning <duration>
//	    name        <label>
//	}
//
// `client` may be repeated, and so may an alias with another certificate (a
// client rotating it: both are accepted); every other subdirective may be
// given once. `clients_from_storage` trusts every stored client, or with
// `group` only those of the groups named (the block may be left out).
// `forward`'s format is one of rfc9440 (the default), url_pem, pem,
// base64_der and xfcc (one Envoy x-forwarded-client-cert element).
// `header` needs `from` or `from_client_certificate` (or both). `name`
// labels the handler's metrics (see Handler.Name).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if sub != "client" {
			if seen[sub] {
				return d.Errf("subdirective '%s' given twice", sub)
			}
			seen[sub] = true
		}
		switch sub {
		case "mode":
			mode, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return err
			}
			if mode != "require" && mode != "optional" {
				return d.Errf("invalid mode '%s': want require or optional", mode)
			}
			h.Mode = mode

		case "trust_pool":
			raw, err := mtlscaddyfile.ParseTrustPool(d)
			if err != nil {
				return err
			}
			h.TrustPoolRaw = raw

		case "client":
			args := d.RemainingArgs()
			if len(args) != 2 && len(args) != 4 {
				return d.ArgErr()
			}
			c := Client{Alias: args[0], CertificateFile: args[1]}
			if len(args) == 4 {
				if args[2] != "tier" {
					return d.Errf("unexpected '%s' after the certificate file: want 'tier <tier>'", args[2])
				}
				c.Tier = args[3]
			}
			for _, other := range h.Clients {
				if other.Alias != c.Alias {
					continue
				}
				if other.CertificateFile == c.CertificateFile {
					return d.Errf("client alias '%s' given twice with certificate '%s'", c.Alias, c.CertificateFile)
				}
				if c.Tier != "" && c.Tier != other.Tier {
					return d.Errf("client alias '%s' given again with tier '%s': want its first tier '%s' or none", c.Alias, c.Tier, other.Tier)
				}
			}
			h.Clients = append(h.Clients, c)

		case "clients_from_storage":
			sc := &StorageClients{}
			if d.NextArg() {
				if d.Val() != "refresh" || !d.NextArg() {
					return d.Errf("clients_from_storage: expected 'refresh <interval>'")
				}
				dur, err := mtlscaddyfile.PositiveDuration(d, "refresh interval")
				if err != nil {
					return err
				}
				sc.Refresh = dur
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "group":
					if sc.Groups != nil {
						return d.Err("clients_from_storage: subdirective 'group' given twice (name every group on one line)")
					}
					sc.Groups = d.RemainingArgs()
					if len(sc.Groups) == 0 {
						return d.ArgErr()
					}
					for _, g := range sc.Groups {
						if err := store.CheckName(g); err != nil {
							return d.Errf("clients_from_storage: group '%s': %v", g, err)
						}
					}
				case "full_refresh":
					if sc.FullRefresh != 0 {
						return d.Err("clients_from_storage: subdirective 'full_refresh' given twice")
					}
					if !d.NextArg() {
						return d.ArgErr()
					}
					dur, err := mtlscaddyfile.PositiveDuration(d, "full_refresh interval")
					if err != nil {
						return err
					}
					sc.FullRefresh = dur
					if d.NextArg() {
						return d.ArgErr()
					}
				default:
					return d.Errf("unrecognized clients_from_storage subdirective '%s'", d.Val())
				}
			}
			h.ClientsFromStorage = sc

		case "header":
			hc := &Header{}
			if d.NextArg() {
				hc.Field = d.Val()
				if _, err := fieldName(hc.Field, ""); err != nil {
					return d.Errf("header field '%s': %v", d.Val(), err)
				}
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := unmarshalHeaderBlock(d, hc); err != nil {
				return err
			}
			h.Header = hc

		case "revocation":
			h.Revocation = new(revocation.Config)
			if err := h.Revocation.UnmarshalCaddyfile(d); err != nil {
				return err
			}

		case "forward":
			fc := &Forward{}
			args := d.RemainingArgs()
			if len(args) > 2 {
				return d.ArgErr()
			}
			for _, arg := range args {
				if f, err := certcodec.ParseFormat(arg); err == nil {
					if f == certcodec.Auto {
						return d.Err("forward format auto is for reading: name one of rfc9440, url_pem, pem, base64_der, xfcc")
					}
					if fc.Format != "" {
						return d.ArgErr()
					}
					fc.Format = arg
					continue
				}
				if fc.Field != "" || fc.Format != "" {
					return d.Errf("forward: '%s' is not a format (rfc9440, url_pem, pem, base64_der, xfcc)", arg)
				}
				if _, err := fieldName(arg, ""); err != nil {
					return d.Errf("forward field '%s': %v", arg, err)
				}
				fc.Field = arg
			}
			h.Forward = fc

		case "cache_size":
			n, err := mtlscaddyfile.OnePositiveInt(d, "cache_size")
			if err != nil {
				return err
			}
			h.CacheSize = n

		case "expiry_warning":
			dur, err := mtlscaddyfile.OneDuration(d, "expiry_warning")
			if err != nil {
				return err
			}
			h.ExpiryWarning = dur

		case "name":
			name, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return err
			}
			h.Name = name

		default:
			return d.Errf("unrecognized subdirective '%s'", sub)
		}
	}
	return nil
}

func unmarshalHeaderBlock(d *caddyfile.Dispenser, hc *Header) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("header subdirective '%s' given twice", sub)
		}
		seen[sub] = true
		switch sub {
		case "format":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if _, err := certcodec.ParseFormat(d.Val()); err != nil {
				return d.Errf("invalid format '%s': %v", d.Val(), err)
			}
			hc.Format = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}

		case "chain":
			hc.ChainField = DefaultChainField
			if d.NextArg() {
				if _, err := fieldName(d.Val(), ""); err != nil {
					return d.Errf("chain field '%s': %v", d.Val(), err)
				}
				hc.ChainField = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "from":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if a == FromTrustedProxies || a == "private_ranges" {
					continue
				}
				if _, err := ParseRange(a); err != nil {
					return d.Errf("invalid from range '%s': %v", a, err)
				}
			}
			hc.From = args

		case "from_client_certificate":
			raw, err := mtlscaddyfile.ParseTrustPool(d)
			if err != nil {
				return err
			}
			hc.FromClientCertificateRaw = raw

		default:
			return d.Errf("unrecognized header subdirective '%s'", sub)
		}
	}
	if len(hc.From) == 0 && hc.FromClientCertificateRaw == nil {
		return d.Err("header: say who may set it: from <load balancer ranges>, from trusted_proxies, " +
			"or from_client_certificate <trust pool> (the server's trusted_proxies are no longer used without being named)")
	}
	return nil
}
