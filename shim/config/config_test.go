package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/scratch"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(`
[daemon]
backend = "mock"
memory_budget = "50%"
lease = "5m"

[adhoc]
min_idle = 1
idle_ttl = "2m"

[pools.hello]
image = "ol-shim-test/runtime:latest"
cmd = ["/runtime"]
memory = "128M"
cpus = 0.5
min_idle = 2
max_size = 8
pause_grace = "100ms"
ready = { socket = "ol.sock", timeout = "5s" }
scratch_size = "64M"

[pools.plain]
image = "ol-shim-test/busybox:latest"
`)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Pools["hello"]
	if h.Memory != 128<<20 || h.MinIdle != 2 || time.Duration(h.PauseGrace) != 100*time.Millisecond || h.Ready.Socket != "ol.sock" {
		t.Errorf("pool hello: %+v", h)
	}
	if c.Pools["plain"].Memory != spec.DefaultPoolMemory {
		t.Errorf("default memory not applied: %+v", c.Pools["plain"])
	}
	if time.Duration(c.Daemon.Lease) != 5*time.Minute || c.AdHoc.MinIdle != 1 || time.Duration(c.AdHoc.IdleTTL) != 2*time.Minute {
		t.Errorf("daemon %+v adhoc %+v", c.Daemon, c.AdHoc)
	}
	if o := scratch.QuotaOptions(int64(h.ScratchSize), h.ScratchInodes, false); o["size"] != "67108864" {
		t.Errorf("scratch options %v", o)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"syntax", "[pools.a]\nimage = \n", "line 2"},
		{"unknown key", "[pools.a]\nimage = \"x\"\ncolour = \"red\"\n", "unknown key pools.a.colour"},
		{"bad size", "[pools.a]\nimage = \"x\"\nmemory = \"lots\"\n", `size "lots"`},
		{"bad duration", "[pools.a]\nimage = \"x\"\nidle_ttl = \"soon\"\n", `duration "soon"`},
		{"negative duration", "[pools.a]\nimage = \"x\"\npause_grace = \"-1s\"\n", "must not be negative"},
		{"bad pool name", "[pools.\"../x\"]\nimage = \"x\"\n", "[pools.../x]: pool name"},
		{"no image", "[pools.a]\nmin_idle = 1\n", "[pools.a]: invalid pool spec: image: required"},
		{"image not of Docker's grammar", "[pools.a]\nimage = \"UPPER/Case\"\n", `[pools.a]: invalid pool spec: image "UPPER/Case"`},
		{"min over max", "[pools.a]\nimage = \"x\"\nmin_idle = 3\nmax_size = 2\n", "min_idle 3 is more than max_size 2"},
		{"host network", "[pools.a]\nimage = \"x\"\nnetwork = \"host\"\n", `network "host": not allowed`},
		{"bad backend", "[daemon]\nbackend = \"vm\"\n", `backend "vm"`},
		{"bad budget", "[daemon]\nmemory_budget = \"200%\"\n", "memory budget"},
		{"wrong type", "[pools.a]\nimage = \"x\"\nmin_idle = \"two\"\n", "line 3"},
		{"cpus nan", "[pools.a]\nimage = \"x\"\ncpus = nan\n", "cpus NaN: not a number"},
		{"cpus inf", "[pools.a]\nimage = \"x\"\ncpus = inf\n", "cpus +Inf: not a number"},
		{"bad size names its key", "[pools.a]\nimage = \"x\"\nscratch_size = \"12Q\"\n", `line 3: pools.a.scratch_size: size "12Q"`},
		{"negative max_pools", "[adhoc]\nmax_pools = -1\n", "max_pools -1"},
		{"negative max_creates", "[daemon]\nmax_creates = -2\n", "max_creates -2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(tc.text)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig: %v; want ErrInvalidConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.toml")
	if c, err := LoadConfig(missing, false); err != nil || len(c.Pools) != 0 {
		t.Errorf("missing optional file: %+v, %v", c, err)
	}
	if _, err := LoadConfig(missing, true); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing required file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("[pools.a]\nimage = \"x\"\ncpus = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(bad, true); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "cpus -1") {
		t.Errorf("bad file: %v; want the file and the reason", err)
	}
}

func TestParseBudget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{{"80%", 800}, {"100%", 1000}, {"1K", 1024}} {
		if got, err := ParseBudget(tc.in, 1000); err != nil || got != tc.want {
			t.Errorf("ParseBudget(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"0%", "101%", "x%", "lots", "-1"} {
		if _, err := ParseBudget(bad, 1000); err == nil {
			t.Errorf("ParseBudget(%q) accepted", bad)
		}
	}
}

// The shipped example config and plugin spec are what the code expects.
func TestShippedFiles(t *testing.T) {
	c, err := LoadConfig("../../examples/config.toml", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pools) != 2 || c.Pools["hello"].Ready == nil {
		t.Errorf("examples/config.toml: %+v", c.Pools)
	}
	b, err := os.ReadFile("../../plugin.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"unix://`+api.DefaultPluginSocket+`"`) || !strings.Contains(string(b), `"Name": "`+api.DefaultPluginName+`"`) {
		t.Errorf("plugin.json does not point at %s as %s:\n%s", api.DefaultPluginSocket, api.DefaultPluginName, b)
	}
}

// Ad-hoc pools keep one sandbox warm and a returned one unpaused for a
// second unless the file says otherwise, 0 included.
func TestAdHocDefaults(t *testing.T) {
	c, err := ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.AdHoc.MinIdle != 1 || time.Duration(c.AdHoc.PauseGrace) != time.Second {
		t.Errorf("defaults: min_idle %d, pause_grace %v; want 1 and 1s", c.AdHoc.MinIdle, time.Duration(c.AdHoc.PauseGrace))
	}
	c, err = ParseConfig("[adhoc]\nmin_idle = 0\npause_grace = \"0s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.AdHoc.MinIdle != 0 || c.AdHoc.PauseGrace != 0 {
		t.Errorf("explicit zeros: min_idle %d, pause_grace %v; want both 0", c.AdHoc.MinIdle, time.Duration(c.AdHoc.PauseGrace))
	}
}
