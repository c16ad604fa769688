package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckStaticRefusesDynamicInit: an init built with cgo (as a plain
// `go build` of the daemon with net makes it) is refused with its loader
// named; a static one passes; a file that is no program is named.
func TestCheckStaticRefusesDynamicInit(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	prog := "package main\n\nimport \"os/user\"\n\nfunc main() { _, _ = user.Current() }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(name string, cgo string) string {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build (CGO_ENABLED=%s): %v\n%s", cgo, err, b)
		}
		return out
	}
	static := build("static", "0")
	if err := CheckStatic(static); err != nil {
		t.Errorf("static init refused: %v", err)
	}
	if _, err := exec.LookPath("gcc"); err == nil {
		dynamic := build("dynamic", "1")
		err := CheckStatic(dynamic)
		if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "ld-linux") {
			t.Errorf("dynamic init: %v, want it refused with its loader named", err)
		}
	} else if os.Getenv("CI") != "" {
		t.Error("no gcc to build a dynamic program with (setup installs it)")
	}
	notProg := filepath.Join(dir, "script")
	if err := os.WriteFile(notProg, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CheckStatic(notProg); err == nil || !strings.Contains(err.Error(), notProg) {
		t.Errorf("a script as init: %v, want an error naming it", err)
	}
}
