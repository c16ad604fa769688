package config

import (
	"errors"
	"testing"
)

// FuzzParseConfig: any text is a config or an ErrInvalidConfig, never a
// panic; an accepted config's pools all validate.
func FuzzParseConfig(f *testing.F) {
	f.Add("[pools.a]\nimage = \"x\"\nmemory = \"64M\"\n")
	f.Add("[daemon]\nbackend = \"mock\"\nmemory_budget = \"50%\"\n")
	f.Add("[pools.\"../x\"]\nimage = \"x\"\n")
	f.Add("[pools.a]\nimage = \"x\"\nready = { socket = \"../../etc\" }\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseConfig(text)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not ErrInvalidConfig", err)
			}
			return
		}
		for name, p := range c.Pools {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted pool %q that does not validate: %v", name, err)
			}
			if n := p.Spec().Network; n == "host" {
				t.Fatalf("accepted host network in pool %q", name)
			}
		}
	})
}
