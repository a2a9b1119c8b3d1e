package revocation

import (
	"errors"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"

	mtlscaddyfile "github.com/caddy-mtls/caddy-mtls/caddyfile"
)

// UnmarshalCaddyfile sets up the config from the block of a revocation
// subdirective; the dispenser is on "revocation" (which takes no
// arguments). Syntax:
//
//	revocation {
//	    mode          skip | ignore_ca_error | strict
//	    crl           <file|url> [...]
//	    reload        <interval>
//	    ocsp          [<responder url>]
//	    ocsp_timeout  <duration>
//	    unknown_cache <duration>
//	    leaf_only
//	    crl_from_certificates
//	    crl_timeout    <duration>
//	    crl_max_size   <size>
//	    crl_cache_size <count>
//	}
//
// `crl` may be repeated; a block needs a crl, ocsp or
// crl_from_certificates unless mode is skip. crl_max_size is in bytes, or a
// size such as `10MiB`.
func (rc *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] && sub != "crl" {
			return d.Errf("revocation subdirective '%s' given twice", sub)
		}
		seen[sub] = true
		switch sub {
		case "mode":
			mode, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return err
			}
			switch mode {
			case "skip", "ignore_ca_error", "strict":
				rc.Mode = mode
			default:
				return d.Errf("invalid revocation mode '%s': want skip, ignore_ca_error or strict", mode)
			}
		case "crl":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			rc.CRLs = append(rc.CRLs, args...)
		case "reload":
			dur, err := mtlscaddyfile.OneDuration(d, "revocation reload interval")
			if err != nil {
				return err
			}
			rc.Reload = dur
		case "leaf_only":
			if d.NextArg() {
				return d.ArgErr()
			}
			rc.LeafOnly = true
		case "ocsp":
			rc.OCSP = true
			if d.NextArg() {
				rc.OCSPResponder = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "ocsp_timeout":
			dur, err := mtlscaddyfile.OneDuration(d, "ocsp_timeout")
			if err != nil {
				return err
			}
			rc.OCSPTimeout = dur
		case "unknown_cache":
			dur, err := mtlscaddyfile.OneDuration(d, "unknown_cache")
			if err != nil {
				return err
			}
			rc.UnknownCache = dur
		case "crl_from_certificates":
			if d.NextArg() {
				return d.ArgErr()
			}
			rc.CRLFromCertificates = true
		case "crl_timeout":
			dur, err := mtlscaddyfile.OneDuration(d, "crl_timeout")
			if err != nil {
				return err
			}
			rc.CRLTimeout = dur
		case "crl_max_size":
			arg, err := mtlscaddyfile.OneArg(d)
			if err != nil {
				return err
			}
			size, err := humanize.ParseBytes(arg)
			if err == nil && (size == 0 || size > 1<<40) {
				err = errors.New("want a size above zero")
			}
			if err != nil {
				return d.Errf("invalid crl_max_size '%s': %v", arg, err)
			}
			rc.CRLMaxSize = int64(size)
		case "crl_cache_size":
			n, err := mtlscaddyfile.OnePositiveInt(d, "crl_cache_size")
			if err != nil {
				return err
			}
			rc.CRLCacheSize = n
		default:
			return d.Errf("unrecognized revocation subdirective '%s'", sub)
		}
	}
	if len(rc.CRLs) == 0 && !rc.OCSP && !rc.CRLFromCertificates && rc.Mode != "skip" {
		return d.Err("revocation needs a crl or ocsp, or crl_from_certificates")
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Config)(nil)
