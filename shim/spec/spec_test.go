package spec

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPoolSpecValidate(t *testing.T) {
	ok := PoolSpec{Image: "ol-shim-test/busybox:latest"}
	tests := []struct {
		name string
		edit func(*PoolSpec)
		want string // "" means valid
	}{
		{"minimal", func(*PoolSpec) {}, ""},
		{"full", func(p *PoolSpec) {
			p.Cmd = []string{"/runtime"}
			p.Env = []string{"A=1", "B="}
			p.WorkingDir = "/srv"
			p.User = "1000:1000"
			p.MemoryBytes = 64 << 20
			p.CPUs = 0.5
			p.PidsLimit = 64
			p.Network = "none"
			p.Pull = PullMissing
			p.Ready = &Readiness{Socket: "ol.sock", Timeout: time.Second}
		}, ""},
		{"image id", func(p *PoolSpec) { p.Image = "sha256:" + strings.Repeat("ab", 32) }, ""},
		{"no image", func(p *PoolSpec) { p.Image = "" }, "image: required"},
		{"bad image", func(p *PoolSpec) { p.Image = "a b" }, `image "a b"`},
		{"empty program", func(p *PoolSpec) { p.Cmd = []string{""} }, "cmd[0]"},
		{"bad env", func(p *PoolSpec) { p.Env = []string{"NOEQUALS"} }, "env[0]"},
		{"relative workdir", func(p *PoolSpec) { p.WorkingDir = "srv" }, "working_dir"},
		{"bad user", func(p *PoolSpec) { p.User = "root;rm" }, "user"},
		{"negative memory", func(p *PoolSpec) { p.MemoryBytes = -1 }, "memory -1"},
		{"tiny memory", func(p *PoolSpec) { p.MemoryBytes = 1 << 20 }, "below Docker's minimum"},
		{"negative cpus", func(p *PoolSpec) { p.CPUs = -0.5 }, "cpus -0.5"},
		{"too many cpus", func(p *PoolSpec) { p.CPUs = 1e6 }, "more than the"},
		{"negative pids", func(p *PoolSpec) { p.PidsLimit = -1 }, "pids_limit"},
		{"host network", func(p *PoolSpec) { p.Network = "host" }, `network "host"`},
		{"container network", func(p *PoolSpec) { p.Network = "container:abc" }, "not allowed"},
		{"bad pull", func(p *PoolSpec) { p.Pull = "always" }, `pull "always"`},
		{"ready both", func(p *PoolSpec) { p.Ready = &Readiness{File: "a", Socket: "b"} }, "exactly one"},
		{"ready escapes", func(p *PoolSpec) { p.Ready = &Readiness{File: "../etc/passwd"} }, "clean path relative"},
		{"ready absolute", func(p *PoolSpec) { p.Ready = &Readiness{Socket: "/host/ol.sock"} }, "clean path relative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.edit(&p)
			err := p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v; want ErrInvalidSpec mentioning %q", err, tc.want)
			}
		})
	}
}

func TestPoolSpecHash(t *testing.T) {
	a := PoolSpec{Image: "x", Cmd: []string{"a"}}
	b := PoolSpec{Image: "x", Cmd: []string{"a"}}
	if a.Hash() != b.Hash() || len(a.Hash()) != 16 {
		t.Errorf("equal specs hash %q and %q", a.Hash(), b.Hash())
	}
	b.Env = []string{"K=V"}
	if a.Hash() == b.Hash() {
		t.Error("different specs hash the same")
	}
}
