package scratch

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "fn-0123abcd", "A.b_c-d", strings.Repeat("x", 128)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "/abs", "-lead", ".hidden", "a b", "a\x00b", strings.Repeat("x", 129), "ünï"} {
		err := ValidateName(bad)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "volume name") {
			t.Errorf("ValidateName(%q): %v, want ErrInvalid naming it", bad, err)
		}
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		in   map[string]string
		want Options
		err  string
	}{
		{nil, Options{Mode: DefaultMode}, ""},
		{map[string]string{"size": "64M"}, Options{Size: 64 << 20, Mode: DefaultMode}, ""},
		{map[string]string{"size": "1G", "inodes": "1000", "uid": "1000", "gid": "100", "mode": "0700"}, Options{Size: 1 << 30, Inodes: 1000, UID: 1000, GID: 100, Mode: 0o700}, ""},
		{map[string]string{"size": "4096"}, Options{Size: 4096, Mode: DefaultMode}, ""},
		{map[string]string{"size": "2KiB"}, Options{Size: 2048, Mode: DefaultMode}, ""},
		{map[string]string{"size": "-1"}, Options{}, `size="-1"`},
		{map[string]string{"size": "lots"}, Options{}, `size="lots"`},
		{map[string]string{"size": "0"}, Options{}, "must be positive"},
		{map[string]string{"size": "99999999999T"}, Options{}, "too large"},
		{map[string]string{"colour": "red"}, Options{}, `option "colour"`},
		{map[string]string{"inodes": "0"}, Options{}, "must be positive"},
		{map[string]string{"uid": "-5"}, Options{}, `uid="-5"`},
		{map[string]string{"uid": "4294967295"}, Options{}, "out of range"},
		{map[string]string{"mode": "0777"}, Options{}, "world-writable"},
		{map[string]string{"mode": "4750"}, Options{}, "setuid"},
		{map[string]string{"mode": "9"}, Options{}, `mode="9"`},
		{map[string]string{"size": "8M", "backend": "zfs"}, Options{}, `backend="zfs"`},
		{map[string]string{"size": "8M", "backend": "kernel"}, Options{Size: 8 << 20, Mode: DefaultMode, Backend: BackendKernel}, ""},
	}
	for _, tc := range tests {
		got, err := ParseOptions(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseOptions(%v) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseOptions(%v): %v; want ErrInvalid mentioning %q", tc.in, err, tc.err)
		}
		if err != nil && !strings.Contains(err.Error(), "valid options: backend") {
			t.Errorf("error %q does not list the valid options", err)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "..", "a/b", "fn-0123", strings.Repeat("y", 130), "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		// An accepted name is exactly one path element below the root.
		root := "/var/lib/ol-shim/volumes"
		p := filepath.Join(root, name)
		if filepath.Dir(p) != root || filepath.Base(p) != name || name == "." || name == ".." {
			t.Fatalf("accepted name %q escapes or is not one element: %s", name, p)
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	f.Add("size", "64M", "mode", "0750")
	f.Add("inodes", "10", "uid", "1000")
	f.Add("size", "-1", "colour", "red")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		o, err := ParseOptions(map[string]string{k1: v1, k2: v2})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if o.Size < 0 || o.Inodes < 0 || o.Mode&0o002 != 0 || o.Mode&^0o7777 != 0 {
			t.Fatalf("accepted bad options %+v", o)
		}
		// What String renders parses back to the same options.
		m := map[string]string{}
		for _, kv := range strings.Split(o.String(), ",") {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		back, err := ParseOptions(m)
		if err != nil || back != o {
			t.Fatalf("round trip of %+v: %+v, %v", o, back, err)
		}
	})
}
