package upstream

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/keystore"
)

// profilesFile is the state of a watched profiles file.
type profilesFile struct {
	path     string
	done     chan struct{} // closed to stop watching
	mu       sync.Mutex    // serializes loads
	lastSum  [sha256.Size]byte
	modules  []caddy.Module // trust pool modules of the current profiles
	stopOnce sync.Once
}

// maxProfilesFile bounds the size of a profiles file.
const maxProfilesFile = 16 << 20

// load reads, parses and builds the file's profiles.
func (f *profilesFile) load(t *Transport) ([]*profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := readBounded(f.path)
	if err != nil {
		return nil, err
	}
	built, mods, err := t.buildFileProfiles(data, filepath.Dir(f.path))
	if err != nil {
		cleanupModules(mods)
		return nil, err
	}
	f.lastSum = sha256.Sum256(data)
	cleanupModules(f.modules)
	f.modules = mods
	return built, nil
}

func readBounded(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxProfilesFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxProfilesFile {
		return nil, fmt.Errorf("larger than %d bytes", maxProfilesFile)
	}
	return data, nil
}

// changed reports whether the file's content differs from what was loaded.
func (f *profilesFile) changed() (bool, error) {
	data, err := readBounded(f.path)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return sha256.Sum256(data) != f.lastSum, nil
}

func (f *profilesFile) stop() {
	f.stopOnce.Do(func() {
		if f.done != nil {
			close(f.done)
		}
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	cleanupModules(f.modules)
	f.modules = nil
}

// watch re-reads the profiles file at interval until the transport is
// cleaned up or its config unloaded.
func (t *Transport) watch(interval time.Duration) {
	done := t.file.done
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.ctx.Done():
			return
		case <-ticker.C:
			t.reload()
		}
	}
}

// reload swaps in the file's profiles if it changed and is good; a broken
// file is logged and the last good profiles stay.
func (t *Transport) reload() {
	changed, err := t.file.changed()
	if err == nil && !changed {
		return
	}
	var fileSet []*profile
	if err == nil {
		fileSet, err = t.file.load(t)
	}
	var set *profileSet
	if err == nil {
		set, err = t.merge(fileSet)
	}
	if err != nil {
		t.logger.Error("profiles file rejected; the last good profiles stay in force",
			zap.String("file", t.file.path), zap.Error(err))
		return
	}
	old := t.profiles.Swap(set)
	t.watchKeyPairsIfUsed(set)
	t.logger.Info("profiles file reloaded", zap.String("file", t.file.path), zap.Int("profiles", len(fileSet)))
	// Requests in flight finish on their connections; idle ones of the old
	// profiles are closed now, and those that come back idle later by their
	// idle timeout.
	current := map[*profile]bool{}
	for _, p := range set.all {
		current[p] = true
	}
	for _, p := range old.all {
		if !current[p] {
			p.defaultRT.CloseIdleConnections()
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
// are taken from dir. It returns the trust pool modules it provisioned.
func (t *Transport) buildFileProfiles(data []byte, dir string) ([]*profile, []caddy.Module, error) {
	var profiles []*Profile
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if bytes.HasPrefix(trimmed, []byte("<")) {
		var err error
		if profiles, err = parseWSO2(trimmed, dir); err != nil {
			return nil, nil, err
		}
	} else {
		var doc profilesJSON
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil {
			return nil, nil, fmt.Errorf("parsing JSON: %w", err)
		}
		if dec.More() {
			return nil, nil, errors.New("parsing JSON: data after the profiles object")
		}
		profiles = doc.Profiles
	}
	var (
		built []*profile
		mods  []caddy.Module
	)
	for i, p := range profiles {
		if p == nil {
			return nil, mods, fmt.Errorf("profile %d: null", i+1)
		}
		b, err := t.buildProfile(p, func(p *Profile) (caddytls.CA, error) {
			ca, mod, err := loadTrustPoolStandalone(t.ctx, p.TrustPoolRaw)
			if mod != nil {
				mods = append(mods, mod)
			}
			return ca, err
		})
		if err != nil {
			return nil, mods, fmt.Errorf("profile %d (%s): %w", i+1, profileName(p), err)
		}
		built = append(built, b)
	}
	return built, mods, nil
}

// loadTrustPoolStandalone provisions a trust pool module from its JSON
// without registering it with the config's context, as the profiles file
// changes while the config runs. The caller cleans the module up.
func loadTrustPoolStandalone(ctx caddy.Context, raw json.RawMessage) (caddytls.CA, caddy.Module, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, nil, fmt.Errorf("trust_pool: %w", err)
	}
	var provider string
	if err := json.Unmarshal(fields["provider"], &provider); err != nil || provider == "" {
		return nil, nil, errors.New(`trust_pool: "provider" must name a tls.ca_pool.source module`)
	}
	delete(fields, "provider")
	modInfo, err := caddy.GetModule("tls.ca_pool.source." + provider)
	if err != nil {
		return nil, nil, fmt.Errorf("trust_pool: %w", err)
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
	if lister, ok := ca.(caddytls.CertificateProvider); ok && len(lister.Certificates()) == 0 {
		return nil, mod, errors.New("trust pool has no certificates")
	}
	return ca, mod, nil
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
			st, err := keystore.Load(path, typ, ts.Password, "")
			if err != nil {
				return nil, fmt.Errorf("<profile> %d (%s) TrustStore %s: %w", i+1, p.Servers[0], filepath.Base(path), err)
			}
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
