package imageref

import (
	"errors"
	"strings"
	"testing"

	"github.com/open-lambda/ol-shim/shim/spec"
)

func TestValidate(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	for _, ok := range []string{"busybox", "ol-shim-test/busybox:latest", "localhost:5000/a/b:v1", "docker.io/library/alpine@sha256:" + hex, hex, "sha256:" + hex} {
		if err := Validate(ok); err != nil {
			t.Errorf("Validate(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "UPPER/Case", "a//b", ":tag", "x@sha256:abc", "tab\tinside", strings.Repeat("a", 5000), "bad\xffutf8"} {
		if err := Validate(bad); !errors.Is(err, spec.ErrInvalidSpec) {
			t.Errorf("Validate(%q): %v, want an invalid spec", bad, err)
		}
	}
}

// TestGatesCheckInFull: a reference of the right form but not Docker's
// grammar passes spec's form check and is refused by imageref's.
func TestGatesCheckInFull(t *testing.T) {
	pc := spec.PoolConfig{Image: "UPPER/Case"}
	if err := pc.Validate(); err != nil {
		t.Fatalf("spec's form check refused %q: %v (the test needs one it lets through)", pc.Image, err)
	}
	if err := Pool(pc); !errors.Is(err, spec.ErrInvalidSpec) {
		t.Errorf("Pool(%q): %v, want an invalid spec", pc.Image, err)
	}
	if err := Spec(pc.Spec()); !errors.Is(err, spec.ErrInvalidSpec) {
		t.Errorf("Spec(%q): %v, want an invalid spec", pc.Image, err)
	}
}
