package clicmd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// The man pages and the bash completion are made from the command line's
// own definitions (commands, usages, descriptions, flags), so they cannot
// drift from it: `ol-shimd man DIR` writes the pages (make deb does, into
// the package) and `ol-shim completion bash` prints the completion.

var completionCommand = &cli.Command{
	Name:      "completion",
	Usage:     "print a shell completion script (bash, zsh or fish)",
	ArgsUsage: "bash|zsh|fish",
	Description: `completion prints a completion script for ol-shim and ol-shimd, made from
their commands and flags. The Debian package installs bash's; by hand:

    ol-shim completion bash > /etc/bash_completion.d/ol-shim
    ol-shim completion zsh > "${fpath[1]}/_ol-shim"
    ol-shim completion fish > ~/.config/fish/completions/ol-shim.fish

bash's is static (every command and flag written into it, so a TAB starts
no program); fish's is urfave/cli's own generator's (ToFishCompletion);
zsh's asks ol-shim for the words at each TAB, as urfave/cli's zsh script
does (--generate-bash-completion).`,
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return usageError("completion: want one shell, bash, zsh or fish; got %q", c.Args().Slice())
		}
		var script string
		switch c.Args().First() {
		case "bash":
			script = BashCompletion(c.App)
		case "zsh":
			script = zshCompletion
		case "fish":
			s, err := c.App.ToFishCompletion()
			if err != nil {
				return fmt.Errorf("completion fish: %w", err)
			}
			script = s
		default:
			return usageError("completion: want one shell, bash, zsh or fish; got %q", c.Args().Slice())
		}
		_, err := io.WriteString(c.App.Writer, script)
		return err
	},
}

// zshCompletion is urfave/cli's zsh script (its autocomplete/zsh_autocomplete)
// for ol-shim: the words come from ol-shim --generate-bash-completion.
const zshCompletion = `#compdef ol-shim ol-shimd

_ol_shim() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}

compdef _ol_shim ol-shim ol-shimd
`

var manCommand = &cli.Command{
	Name:      "man",
	Usage:     "write the man pages (section 1) into a directory",
	ArgsUsage: "DIR",
	Hidden:    true,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "date", Usage: "the pages' date, YYYY-MM-DD (default: SOURCE_DATE_EPOCH's, else today)"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return usageError("man: want one argument, the directory to write the pages into")
		}
		date := c.String("date")
		if date == "" {
			date = pageDate()
		} else if _, err := time.Parse(time.DateOnly, date); err != nil {
			return usageError("man: --date %q: want YYYY-MM-DD", date)
		}
		pages, err := WriteManPages(c.App, c.Args().First(), date)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%d pages in %s\n", len(pages), c.Args().First())
		return nil
	},
}

// pageDate is SOURCE_DATE_EPOCH's day (reproducible builds), else today's.
func pageDate() string {
	t := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			t = time.Unix(sec, 0)
		}
	}
	return t.UTC().Format(time.DateOnly)
}

// visible returns the commands a user sees (no hidden ones, no help).
func visible(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if !c.Hidden && c.Name != "help" {
			out = append(out, c)
		}
	}
	return out
}

// roff escapes text for a man page: backslashes and hyphens, and a line
// that would start with a control character.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// paragraphs writes text (blank-line separated paragraphs; indented lines
// kept as they are) as roff.
func paragraphs(w io.Writer, text string) {
	for i, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			fmt.Fprintln(w, ".PP")
		}
		if strings.HasPrefix(p, " ") || strings.HasPrefix(p, "\t") {
			fmt.Fprintf(w, ".nf\n.RS 4\n%s\n.RE\n.fi\n", roff(dedent(p)))
			continue
		}
		fmt.Fprintln(w, roff(p))
	}
}

func dedent(p string) string {
	lines := strings.Split(p, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimLeft(l, " \t")
	}
	return strings.Join(lines, "\n")
}

// flagItems writes each flag as a .TP item: its names, its value, its
// usage, its default and its environment variables.
func flagItems(w io.Writer, flags []cli.Flag) {
	for _, f := range flags {
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		var names []string
		for _, n := range f.Names() {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			names = append(names, `\fB`+roff(dash+n)+`\fR`)
		}
		head := strings.Join(names, ", ")
		if df.TakesValue() {
			head += ` \fIvalue\fR`
		}
		fmt.Fprintf(w, ".TP\n%s\n%s", head, roff(df.GetUsage()))
		d := df.GetDefaultText()
		if d == "" && df.TakesValue() {
			d = df.GetValue()
		}
		if d = strings.Trim(d, `"`); !slices.Contains([]string{"", "false", "0", "0s", "[]"}, d) {
			fmt.Fprintf(w, " (default: %s)", roff(d))
		}
		if env := df.GetEnvVars(); len(env) > 0 {
			fmt.Fprintf(w, " [environment: %s]", roff(strings.Join(env, ", ")))
		}
		fmt.Fprintln(w)
	}
}

// ManPage is one page WriteManPages wrote.
type ManPage struct {
	Name string // e.g. ol-shim-pool-create
	Path string
}

// WriteManPages writes ol-shim(1), ol-shimd(1) and a page per visible
// command and subcommand (ol-shim-run(1), ol-shim-pool-create(1), ...)
// into dir.
func WriteManPages(app *cli.App, dir, date string) ([]ManPage, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("man pages: %w", err)
	}
	version := strings.TrimPrefix(app.Version, "v")
	var pages []ManPage
	var all []string
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range visible(cmds) {
			p := append(slices.Clone(path), c.Name)
			all = append(all, strings.Join(p, "-"))
			walk(p, c.Subcommands)
		}
	}
	walk([]string{"ol-shim"}, app.Commands)

	write := func(name string, body func(w io.Writer)) error {
		path := filepath.Join(dir, name+".1")
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("man page %s: %w", name, err)
		}
		fmt.Fprintf(f, ".TH %q 1 %q \"ol-shim %s\" \"ol-shim manual\"\n", strings.ToUpper(name), date, version)
		body(f)
		if err := f.Close(); err != nil {
			return fmt.Errorf("man page %s: %w", name, err)
		}
		pages = append(pages, ManPage{Name: name, Path: path})
		return nil
	}
	seeAlso := func(w io.Writer, self string, names []string) {
		var refs []string
		for _, n := range names {
			if n != self {
				refs = append(refs, `\fB`+roff(n)+`\fR(1)`)
			}
		}
		refs = append(refs, `\fBdocker\fR(1)`)
		fmt.Fprintf(w, ".SH SEE ALSO\n%s\n", strings.Join(refs, ", "))
	}
	globals := func(w io.Writer) {
		fmt.Fprintln(w, ".SH GLOBAL OPTIONS")
		flagItems(w, app.Flags)
	}

	err := write("ol-shim", func(w io.Writer) {
		fmt.Fprintf(w, ".SH NAME\nol\\-shim \\- %s\n", roff(app.Usage))
		fmt.Fprintf(w, ".SH SYNOPSIS\n\\fBol\\-shim\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR...]\n.br\n\\fBdocker ol\\fR \\fICOMMAND\\fR ...\n")
		fmt.Fprintln(w, ".SH DESCRIPTION")
		paragraphs(w, `ol-shim keeps pools of paused containers per function and answers docker-run-like calls from them: a warm sandbox is unpaused in milliseconds instead of started in hundreds. Each sandbox's scratch directory (/host) is a volume of the ol-shim volume plugin, with exact size and inode quotas.

The daemon (ol-shim serve, run by systemd as ol-shim.service) holds the pools; the commands below talk to it over its API socket. ol-shim is also Docker's CLI plugin "docker ol". Commands of the daemon's (serve, demo) are carried out by ol-shimd, which ol-shim hands them to.`)
		fmt.Fprintln(w, ".SH COMMANDS")
		for _, c := range visible(app.Commands) {
			fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s; see \\fBol\\-shim\\-%s\\fR(1)\n", roff(c.Name), roff(c.Usage), roff(c.Name))
		}
		globals(w)
		fmt.Fprintln(w, ".SH EXIT STATUS")
		paragraphs(w, "0 on success. A usage error (an unknown command or flag, a missing or malformed argument) exits 125, as docker's own errors do. run exits with its command's code; 125 when ol-shim or Docker failed, 126 when the command cannot be invoked, 127 when it is not found. Other commands exit 1 on any other error. Every error is printed once on standard error.")
		fmt.Fprintln(w, ".SH FILES")
		for _, f := range [][2]string{
			{"/etc/ol-shim/config.toml", "the daemon's configuration: pools, on-demand pools, scratch volumes (see the comments in it)"},
			{"/var/lib/ol-shim", "the state root: volumes, their records, pools made through the API (pools.db)"},
			{"/run/ol-shim/ol-shim.sock", "the API socket (root:docker, 0660)"},
			{"/run/ol-shim/plugin.sock", "the volume plugin's socket, which dockerd finds through /usr/lib/docker/plugins/ol-shim.json"},
		} {
			fmt.Fprintf(w, ".TP\n\\fI%s\\fR\n%s\n", roff(f[0]), roff(f[1]))
		}
		seeAlso(w, "ol-shim", append([]string{"ol-shimd"}, all...))
	})
	if err != nil {
		return nil, err
	}
	err = write("ol-shimd", func(w io.Writer) {
		fmt.Fprintln(w, ".SH NAME\nol\\-shimd \\- the ol\\-shim daemon's program")
		fmt.Fprintln(w, ".SH SYNOPSIS\n\\fBol\\-shimd serve\\fR [\\fIOPTIONS\\fR]\n.br\n\\fBol\\-shimd\\fR \\fICOMMAND\\fR ...")
		fmt.Fprintln(w, ".SH DESCRIPTION")
		paragraphs(w, `ol-shimd is ol-shim with the daemon's commands besides every client command: serve (the service systemd runs), demo, and the volume servers serve starts, one per quota'd volume. ol-shim hands these commands to ol-shimd by exec, so both take the same arguments; see ol-shim(1) and ol-shim-serve(1).

Sandboxes run ol-shim-init, a small static program next to ol-shimd or in /usr/lib/ol-shim, as their PID 1 and agent.`)
		seeAlso(w, "ol-shimd", []string{"ol-shim", "ol-shim-serve"})
	})
	if err != nil {
		return nil, err
	}
	var walkPages func(path []string, cmds []*cli.Command) error
	walkPages = func(path []string, cmds []*cli.Command) error {
		for _, c := range visible(cmds) {
			p := append(slices.Clone(path), c.Name)
			name := strings.Join(p, "-")
			err := write(name, func(w io.Writer) {
				fmt.Fprintf(w, ".SH NAME\n%s \\- %s\n", roff(name), roff(c.Usage))
				fmt.Fprintf(w, ".SH SYNOPSIS\n\\fB%s\\fR", roff(strings.Join(p, " ")))
				subs := visible(c.Subcommands)
				switch {
				case len(subs) > 0:
					fmt.Fprint(w, ` \fICOMMAND\fR [\fIOPTIONS\fR] [\fIARGS\fR...]`)
				default:
					if len(c.Flags) > 0 {
						fmt.Fprint(w, ` [\fIOPTIONS\fR]`)
					}
					if c.ArgsUsage != "" {
						fmt.Fprintf(w, ` \fI%s\fR`, roff(c.ArgsUsage))
					}
				}
				fmt.Fprintln(w)
				fmt.Fprintln(w, ".SH DESCRIPTION")
				if c.Description != "" {
					paragraphs(w, c.Description)
				} else {
					paragraphs(w, strings.ToUpper(c.Usage[:1])+c.Usage[1:]+".")
				}
				if len(subs) > 0 {
					fmt.Fprintln(w, ".SH COMMANDS")
					for _, s := range subs {
						fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s; see \\fB%s\\-%s\\fR(1)\n", roff(s.Name), roff(s.Usage), roff(name), roff(s.Name))
					}
				}
				if len(c.Flags) > 0 {
					fmt.Fprintln(w, ".SH OPTIONS")
					flagItems(w, c.Flags)
				}
				globals(w)
				related := []string{"ol-shim"}
				if len(p) > 2 {
					related = append(related, strings.Join(p[:len(p)-1], "-"))
				}
				for _, s := range subs {
					related = append(related, name+"-"+s.Name)
				}
				seeAlso(w, name, related)
			})
			if err != nil {
				return err
			}
			if err := walkPages(p, c.Subcommands); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walkPages([]string{"ol-shim"}, app.Commands); err != nil {
		return nil, err
	}
	return pages, nil
}

// BashCompletion is a bash completion script for ol-shim and ol-shimd:
// commands and subcommands, then each one's flags; after a flag that takes
// a value, file names.
func BashCompletion(app *cli.App) string {
	var words, values strings.Builder
	var walk func(path string, flags []cli.Flag, cmds []*cli.Command)
	walk = func(path string, flags []cli.Flag, cmds []*cli.Command) {
		var ws []string
		for _, c := range visible(cmds) {
			ws = append(ws, c.Name)
		}
		for _, f := range flags {
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue
			}
			takes := false
			if df, ok := f.(cli.DocGenerationFlag); ok {
				takes = df.TakesValue()
			}
			for _, n := range f.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				ws = append(ws, dash+n)
				if takes {
					fmt.Fprintf(&values, "\t%q) return 0 ;;\n", path+"|"+dash+n)
				}
			}
		}
		if !slices.Contains(ws, "--help") {
			ws = append(ws, "--help")
		}
		fmt.Fprintf(&words, "\t%q) echo %q ;;\n", path, strings.Join(ws, " "))
		for _, c := range visible(cmds) {
			p := c.Name
			if path != "" {
				p = path + " " + c.Name
			}
			walk(p, c.Flags, c.Subcommands)
		}
	}
	walk("", app.Flags, app.Commands)
	return `# bash completion for ol-shim and ol-shimd, made by "ol-shim completion bash"
# from their commands and flags.

# _ol_shim_words PATH: the subcommands and flags after the command PATH.
_ol_shim_words() {
	case "$1" in
` + words.String() + `	esac
}

# _ol_shim_takes_value PATH FLAG: whether FLAG of PATH takes a value.
_ol_shim_takes_value() {
	case "$1|$2" in
` + values.String() + `	esac
	return 1
}

_ol_shim() {
	local cur=${COMP_WORDS[COMP_CWORD]} path="" i w sub
	COMPREPLY=()
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case "$w" in
		--*=*) ;;
		-*)
			if _ol_shim_takes_value "$path" "$w"; then
				((i++))
				if ((i == COMP_CWORD)); then
					COMPREPLY=($(compgen -f -- "$cur"))
					return
				fi
			fi
			;;
		*)
			sub=" $(_ol_shim_words "$path") "
			if [[ $sub == *" $w "* ]]; then
				path="${path:+$path }$w"
			else
				# An argument (an image, a command): leave the rest to bash.
				return
			fi
			;;
		esac
	done
	COMPREPLY=($(compgen -W "$(_ol_shim_words "$path")" -- "$cur"))
}
complete -F _ol_shim -o default ol-shim ol-shimd
`
}
