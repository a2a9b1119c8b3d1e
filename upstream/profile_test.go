package upstream

import (
	"strings"
	"testing"
)

func TestPatternPrecedence(t *testing.T) {
	set := newProfileSet()
	mk := func(name string) *profile { return &profile{name: name} }
	for _, tc := range []struct {
		name     string
		patterns []string
	}{
		{"exact", []string{"api.example.com:443"}},
		{"wild", []string{"*.example.com:443"}},
		{"wild-longer", []string{"*.b.example.com:443"}},
		{"wild-anyport", []string{"*.example.com"}},
		{"host", []string{"api.example.com", "10.0.0.5"}},
		{"v6", []string{"[2001:db8::1]:9444"}},
		{"several", []string{"one.test:1", "two.test:2"}},
	} {
		if err := set.add(mk(tc.name), tc.patterns); err != nil {
			t.Fatal(err)
		}
	}
	for addr, want := range map[string]string{
		"api.example.com:443":    "exact",
		"API.Example.com:443":    "exact",
		"x.example.com:443":      "wild",
		"x.b.example.com:443":    "wild-longer",
		"deep.x.example.com:443": "wild",
		"x.example.com:8443":     "wild-anyport",
		"api.example.com:8443":   "wild-anyport", // a wildcard on the port beats the host on any port
		"example.com:443":        "",
		"10.0.0.5:9000":          "host",
		"[2001:db8::1]:9444":     "v6",
		"[2001:db8::1]:9445":     "",
		"two.test:2":             "several",
		"two.test:1":             "",
		"other.test:443":         "",
	} {
		got := ""
		if p := set.match(addr); p != nil {
			got = p.name
		}
		if got != want {
			t.Errorf("match(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestPatternErrors(t *testing.T) {
	for _, bad := range []string{"", "host:", "host:0", "host:70000", "host:http", "*.:443", "a*.example.com:443", "*example.com", "[::1", "a b:1", "http://a:1", "*"} {
		if _, err := parsePattern(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	set := newProfileSet()
	if err := set.add(&profile{name: "a"}, []string{"x.test:443"}); err != nil {
		t.Fatal(err)
	}
	for _, dup := range []string{"x.test:443", "X.TEST:443"} {
		err := set.add(&profile{name: "b"}, []string{dup})
		if err == nil || !strings.Contains(err.Error(), "given twice") {
			t.Errorf("duplicate %q: %v", dup, err)
		}
	}
}

func BenchmarkProfileMatch(b *testing.B) {
	set := newProfileSet()
	for i, p := range []string{"a.internal:9444", "b.partner.example:443", "*.partner.example:443", "c.internal"} {
		_ = set.add(&profile{name: string(rune('a' + i))}, []string{p})
	}
	for _, addr := range []string{"a.internal:9444", "x.partner.example:443", "c.internal:80", "none.example:443"} {
		b.Run(addr, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_ = set.match(addr)
			}
		})
	}
}
