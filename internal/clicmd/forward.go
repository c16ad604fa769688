package clicmd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"
)

// DaemonBinary is the program with the daemon's commands.
const DaemonBinary = "ol-shimd"

// DaemonCommand names a command that only ol-shimd has.
type DaemonCommand struct {
	Name, Usage string
	Hidden      bool
}

// DaemonCommands are ol-shimd's own commands, as ol-shim lists them in its
// help and hands them on (cmd/ol-shimd tests that they match).
var DaemonCommands = []DaemonCommand{
	{Name: "serve", Usage: "run the ol-shim daemon: pools, the API socket and the scratch volume plugin"},
	{Name: "demo", Usage: "run one pool through cold, warm and hot acquires and print what each cost"},
	{Name: "init", Usage: "PID 1 of sandbox containers: the run agent, and the pool's command if it has one"},
	{Name: "volume-server", Usage: "serve one quota'd volume through FUSE (started by ol-shim serve)", Hidden: true},
}

// Forwarders are stand-ins for DaemonCommands that exec ol-shimd with the
// same arguments: the process keeps its ID, so a supervisor, a signal or a
// pid file sees no difference.
func Forwarders() []*cli.Command {
	var out []*cli.Command
	for _, d := range DaemonCommands {
		out = append(out, &cli.Command{
			Name: d.Name, Usage: d.Usage, Hidden: d.Hidden,
			SkipFlagParsing: true, HideHelp: true,
			Action: func(*cli.Context) error { return forward() },
		})
	}
	return out
}

// forward execs ol-shimd with this process's arguments. It returns only on
// failure.
func forward() error {
	path, err := daemonPath()
	if err != nil {
		return cli.Exit(err.Error(), 125)
	}
	err = syscall.Exec(path, os.Args, os.Environ())
	return cli.Exit(fmt.Sprintf("exec %s: %v", path, err), 125)
}

// daemonPath finds ol-shimd: next to this binary (symlinks resolved, so
// the docker-ol plugin link finds it too), else on PATH.
func daemonPath() (string, error) {
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), DaemonBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(DaemonBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s: the daemon's program is neither next to %s nor on PATH (make install puts both in place)", DaemonBinary, self)
}
