// Package units parses the human-readable sizes ol-shim's configuration,
// API and volume options accept, as Docker does (docker/go-units, whose
// RAMInBytes reads docker run's --memory and --shm-size). It is a leaf: the
// API's wire types and the volume plugin both use it.
package units

import (
	"fmt"
	"math"
	"strings"

	dockerunits "github.com/docker/go-units"
)

// ParseSize parses a byte count as docker run's --memory does: a number
// (fractions allowed) with an optional b, k, m, g, t or p suffix, powers
// of 1024, in either case, with an optional "b" or "ib" after it: "64M",
// "64mb", "1.5g", "4096". It must come to at least one byte.
func ParseSize(s string) (int64, error) {
	if len(s) > 40 {
		return 0, fmt.Errorf("size %q...: too long", s[:40])
	}
	n, err := dockerunits.RAMInBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional k, m, g, t or p suffix (powers of 1024), as docker's --memory: e.g. 64m, 1.5g", s)
	}
	switch {
	case n == 0:
		return 0, fmt.Errorf("size %q: must be positive", s)
	case n < 0 || n == math.MaxInt64: // past int64: go-units' conversion wraps or saturates
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n, nil
}
