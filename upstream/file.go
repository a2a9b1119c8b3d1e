package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddy-mtls/caddy-mtls/keystore"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"github.com/caddy-mtls/caddy-mtls/trustpool"
)

// profilesFile is the state of a watched profiles file.
type profilesFile struct {
	path   string
	cancel context.CancelFunc // stops watching

	mu      sync.Mutex        // serializes attempts, guards the fields below
	state   [sha256.Size]byte // of the file and the files it names, as last tried
	deps    []string          // the files the profiles of the last attempt name
	lastErr string            // the last error logged, so as not to repeat it
	modules []caddy.Module    // trust pool modules of the profiles in force
	stopped bool
}

// maxProfilesFile bounds the size of a profiles file.
const maxProfilesFile = 16 << 20

// stateOf digests the file's content and the size and time of each file
// its profiles name (keystores, PEM files), so that replacing a keystore
// the file points to counts as a change too.
func stateOf(data []byte, deps []string) [sha256.Size]byte {
	h := sha256.New()
	h.Write(data)
	for _, d := range deps {
		fmt.Fprintf(h, "\x00%s", d)
		if fi, err := os.Stat(d); err == nil {
			fmt.Fprintf(h, "\x00%d\x00%d", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// attempt builds the profiles of data, a new version of the file, and the
// set they make with the configured profiles; on success it puts them in
// force. f.mu must be held.
func (f *profilesFile) attempt(t *Transport, data []byte) (int, error) {
	var built []*profile
	var mods []caddy.Module
	var deps []string
	err := safe.Do("profiles file "+f.path, func() (err error) {
		built, mods, deps, err = t.buildFileProfiles(data, filepath.Dir(f.path))
		return err
	})
	f.deps = deps
	f.state = stateOf(data, deps)
	var set *profileSet
	if err == nil {
		set, err = t.merge(built)
	}
	if err != nil {
		cleanupModules(mods)
		return 0, err
	}
	old := t.profiles.Swap(set)
	t.trackExpiry(set)
	cleanupModules(f.modules)
	f.modules = mods
	t.watchKeyPairsIfUsed(set)
	if old != nil {
		t.closeRetired(old, set)
	}
	return len(built), nil
}

func (f *profilesFile) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	cleanupModules(f.modules)
	f.modules = nil
}

// reload puts the file's profiles in force if it changed and is good; a
// broken or missing file is logged (once per distinct reason) and the last
// good profiles stay.
func (t *Transport) reload() {
	f := t.file
	data, err := bounded.ReadFile(f.path, maxProfilesFile)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	n := 0
	if err == nil {
		if stateOf(data, f.deps) == f.state {
			// Readable again and as last tried: whatever made it
			// unreadable is over, and is logged again if it comes back.
			f.lastErr = ""
			return
		}
		n, err = f.attempt(t, data)
	}
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			metrics.ProfilesFileRejected(f.path)
			t.logger.Error("profiles file rejected; the last good profiles stay in force",
				zap.String("file", f.path), zap.Error(err))
		}
		return
	}
	f.lastErr = ""
	t.logger.Info("profiles file reloaded", zap.String("file", f.path), zap.Int("profiles", n))
}

// closeRetired closes the idle connections of the profiles of old that are
// not in set. Requests in flight finish on their connections; those that
// come back idle later are closed by their idle timeout.
func (t *Transport) closeRetired(old, set *profileSet) {
	current := map[*profile]bool{}
	for _, p := range set.all {
		current[p] = true
	}
	for _, p := range old.all {
		if !current[p] {
			p.retire()
		}
	}
	t.pools.drop(func(p *profile) bool { return current[p] })
}

// profilesJSON is the JSON profiles file.
type profilesJSON struct {
	Profiles []*Profile `json:"profiles"`
}

// buildFileProfiles parses a profiles file (JSON, or WSO2 XML when it
// starts with '<') and builds its profiles. Relative paths in a WSO2 file
// are taken from dir. It returns the trust pool modules it provisioned and
// the files the profiles name.
func (t *Transport) buildFileProfiles(data []byte, dir string) (built []*profile, mods []caddy.Module, deps []string, err error) {
	profiles, err := parseProfilesFile(data, dir)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, p := range profiles {
		if p != nil {
			deps = append(deps, p.files()...)
		}
	}
	// Many profiles name the same keystore: each file is looked at once
	// per reload.
	slices.Sort(deps)
	deps = slices.Compact(deps)
	for i, p := range profiles {
		if p == nil {
			return nil, mods, deps, fmt.Errorf("profile %d: null", i+1)
		}
		b, err := t.buildProfile(p, func(p *Profile) (caddytls.CA, error) {
			ca, mod, err := trustpool.LoadStandalone(t.ctx, p.TrustPoolRaw)
			if mod != nil {
				mods = append(mods, mod)
			}
			return ca, err
		})
		if err != nil {
			return nil, mods, deps, fmt.Errorf("profile %d (%s): %w", i+1, profileName(p), err)
		}
		built = append(built, b)
	}
	return built, mods, deps, nil
}

// parseProfilesFile parses a profiles file: WSO2's XML when it starts
// with '<', else JSON.
func parseProfilesFile(data []byte, dir string) ([]*Profile, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if bytes.HasPrefix(trimmed, []byte("<")) {
		return parseWSO2(trimmed, dir)
	}
	var doc profilesJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing JSON: data after the profiles object")
	}
	return doc.Profiles, nil
}

// files returns the files the profile names, for change detection.
func (p *Profile) files() []string {
	var out []string
	for _, f := range []string{p.ClientCertificateFile, p.ClientKeyFile, p.trustFile} {
		if f != "" {
			out = append(out, f)
		}
	}
	if p.ClientKeystore != nil {
		out = append(out, p.ClientKeystore.File)
	}
	return append(out, trustpool.Files(p.TrustPoolRaw)...)
}

func cleanupModules(mods []caddy.Module) {
	for _, m := range mods {
		if c, ok := m.(caddy.CleanerUpper); ok {
			_ = c.Cleanup()
		}
	}
}

// wso2Profiles is WSO2 API Manager's multi_ssl_profiles.xml.
type wso2Profiles struct {
	XMLName  xml.Name      `xml:"parameter"`
	Name     string        `xml:"name,attr"`
	Profiles []wso2Profile `xml:"profile"`
}

type wso2Profile struct {
	Servers    string     `xml:"servers"`
	TrustStore *wso2Store `xml:"TrustStore"`
	KeyStore   *wso2Store `xml:"KeyStore"`
}

type wso2Store struct {
	Location    string `xml:"Location"`
	Type        string `xml:"Type"`
	Password    string `xml:"Password"`
	KeyPassword string `xml:"KeyPassword"`
}

// parseWSO2 turns a multi_ssl_profiles.xml into profiles.
func parseWSO2(data []byte, dir string) ([]*Profile, error) {
	var doc wso2Profiles
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing WSO2 SSL profiles XML: %w", err)
	}
	if len(doc.Profiles) == 0 {
		return nil, errors.New("WSO2 SSL profiles XML has no <profile>")
	}
	var out []*Profile
	for i, wp := range doc.Profiles {
		p := &Profile{}
		for s := range strings.SplitSeq(wp.Servers, ",") {
			if s = strings.TrimSpace(s); s != "" {
				p.Servers = append(p.Servers, s)
			}
		}
		if len(p.Servers) == 0 {
			return nil, fmt.Errorf("<profile> %d has no <servers>", i+1)
		}
		if ts := wp.TrustStore; ts != nil {
			path := resolvePath(dir, ts.Location)
			typ, err := keystore.ParseType(strings.TrimSpace(ts.Type), path)
			if err != nil {
				return nil, fmt.Errorf("<profile> %d (%s) TrustStore: %w", i+1, p.Servers[0], err)
			}
			st, err := keystore.Load(path, typ, caddy.NewReplacer().ReplaceKnown(ts.Password, ""), "")
			if err != nil {
				return nil, fmt.Errorf("<profile> %d (%s) TrustStore %s: %w", i+1, p.Servers[0], filepath.Base(path), err)
			}
			p.trustFile = path
			p.trustDeclared, p.trustReadAs = typ, st.Type
			p.trustPool = st.Trusted
			if p.trustPool == nil {
				p.trustPool = []*x509.Certificate{}
			}
		}
		if ks := wp.KeyStore; ks != nil {
			path := resolvePath(dir, ks.Location)
			p.ClientKeystore = &Keystore{File: path, Type: strings.TrimSpace(ks.Type), Password: ks.Password, KeyPassword: ks.KeyPassword}
		}
		out = append(out, p)
	}
	return out, nil
}

func resolvePath(dir, location string) string {
	location = strings.TrimSpace(location)
	if location == "" || filepath.IsAbs(location) {
		return location
	}
	return filepath.Join(dir, location)
}
