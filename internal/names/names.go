// Package names holds the rule for pool names, a leaf that both the pool
// library (sandboxset) and the client's packages (shim/spec, shim/api)
// check names with.
package names

import (
	"fmt"
	"regexp"
	"sync"
)

var poolRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`) })

// Pool reports whether name can name a pool: 1 to 100 characters,
// letters, digits, '_', '.' and '-', starting with a letter or digit.
// Sandbox IDs are derived from it and must be valid Docker volume names.
func Pool(name string) error {
	if !poolRE().MatchString(name) {
		return fmt.Errorf("pool name %q: must be 1-100 characters of [A-Za-z0-9_.-] starting with a letter or digit", name)
	}
	return nil
}
