package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/open-lambda/ol-shim/internal/clicmd"
)

var overstrike = regexp.MustCompile(".\x08")

// The man pages are made from the command line's definitions: one per
// visible command, each naming every flag of its command, and each renders
// with man(1) without a warning.
func TestManPages(t *testing.T) {
	man, err := exec.LookPath("man")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("man not found (make setup installs man-db)")
		}
		t.Skip("man not found")
	}
	dir := t.TempDir()
	app := newApp()
	pages, err := clicmd.WriteManPages(app, dir, "2026-12-02")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pages {
		names = append(names, p.Name)
	}
	for _, want := range []string{"ol-shim", "ol-shimd", "ol-shim-run", "ol-shim-serve", "ol-shim-status", "ol-shim-pool", "ol-shim-pool-create", "ol-shim-completion"} {
		if !slices.Contains(names, want) {
			t.Errorf("no page %s among %v", want, names)
		}
	}
	if slices.Contains(names, "ol-shim-volume-server") || slices.Contains(names, "ol-shim-man") {
		t.Errorf("a hidden command has a page: %v", names)
	}
	render := func(name string) string {
		t.Helper()
		cmd := exec.Command(man, "--warnings=all", "-l", filepath.Join(dir, name+".1"))
		cmd.Env = append(os.Environ(), "MANWIDTH=200", "MAN_KEEP_FORMATTING=0", "LC_ALL=C.UTF-8")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v: %s", name, err, stderr.String())
		}
		// Bold and underline by overstrike (man's output to a pipe).
		return overstrike.ReplaceAllString(string(out), "")
	}
	for _, p := range pages {
		render(p.Name)
	}
	check := func(page string, cmd *cli.Command) {
		out := render(page)
		for _, f := range cmd.Flags {
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue // an old name kept hidden
			}
			for _, n := range f.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				if !strings.Contains(out, dash+n) {
					t.Errorf("%s does not name flag %s%s:\n%s", page, dash, n, out)
				}
			}
		}
		if !strings.Contains(out, cmd.Usage) && !strings.Contains(strings.Join(strings.Fields(out), " "), cmd.Usage) {
			t.Errorf("%s lacks the command's usage %q:\n%s", page, cmd.Usage, out)
		}
	}
	for _, c := range app.Commands {
		if c.Name == "run" || c.Name == "serve" {
			check("ol-shim-"+c.Name, c)
		}
		if c.Name == "pool" {
			for _, s := range c.Subcommands {
				check("ol-shim-pool-"+s.Name, s)
			}
		}
	}
}

// The bash completion completes commands, subcommands and flags as bash
// calls it, and file names after a flag that takes a value.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	out, err := runApp(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "ol-shim.bash")
	if err := os.WriteFile(script, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	os.WriteFile(filepath.Join(files, "pool.json"), nil, 0o644)
	complete := func(line string) []string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		cmd := exec.Command(bash, "--norc", "-c", `source "$1"; cd "$2"; COMP_WORDS=(`+strings.Join(quoted, " ")+`); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ol_shim; printf '%s\n' "${COMPREPLY[@]}"`, "bash", script, files)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("complete %q: %v: %s", line, err, b)
		}
		return strings.Fields(string(b))
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"ol-shim st", []string{"status"}},
		{"ol-shim pool c", []string{"create"}},
		{"ol-shimd pool create --re", []string{"--ready-socket", "--read-only", "--recycle"}},
		{"ol-shim run --po", []string{"--pool"}},
		{"ol-shim --socket /x.sock run --re", []string{"--reuse"}},
		{"ol-shim run -i --po", []string{"--pool"}},
		{"ol-shim pool create --file po", []string{"pool.json"}},
		{"ol-shim completion ", []string{"--help", "-h"}},
		{"ol-shim run busybox --po", nil}, // the command's own arguments: bash's
	} {
		if got := complete(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q: %q, want %q", tc.line, got, tc.want)
		}
	}
	if _, err := runApp(t, "completion", "tcsh"); err == nil || !strings.Contains(err.Error(), "want one shell, bash, zsh or fish") {
		t.Errorf("completion tcsh: %v; want an error naming the shells", err)
	}
	// zsh's and fish's: urfave/cli's (fish's generated from the same
	// commands; zsh's asks the program, whose words are its commands').
	if out, err := runApp(t, "completion", "fish"); err != nil || !strings.Contains(out, "complete -c ol-shim") || !strings.Contains(out, "pool") {
		t.Errorf("completion fish: %v:\n%s", err, out)
	}
	if out, err := runApp(t, "completion", "zsh"); err != nil || !strings.Contains(out, "#compdef ol-shim") {
		t.Errorf("completion zsh: %v:\n%s", err, out)
	}
	// The words it asks for: cmd/ol-shim's TestCompletionWords (urfave/cli
	// reads them from os.Args, so only the built program shows them).
}
