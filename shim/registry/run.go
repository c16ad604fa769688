package registry

import (
	"context"
	"fmt"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Run runs a command in a sandbox of a pool (or of an image's pool): by
// default the sandbox is destroyed afterwards and the pool refills in the
// background; with Reuse it goes back to the pool.
func (r *Registry) Run(ctx context.Context, req api.RunRequest) (*api.RunResult, error) {
	ex, ok := r.cfg.Provider.(Execer)
	if !ok {
		return nil, ErrNoExec
	}
	if len(req.Cmd) == 0 {
		return nil, fmt.Errorf("%w: run: no command", spec.ErrInvalidSpec)
	}
	if err := spec.ValidateEnv(req.Env); err != nil {
		return nil, err
	}
	p, ref, err := r.take(ctx, req.Pool, req.Image)
	if err != nil {
		return nil, err
	}
	id := ref.Sandbox().ID()
	res, err := ex.Exec(ctx, ref.Sandbox(), ExecRequest{Cmd: req.Cmd, Env: req.Env, WorkingDir: req.WorkingDir, Stdin: req.Stdin})
	if err != nil || !req.Reuse {
		// Off the caller's path: the destroy, then the refill it allows.
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			if derr := ref.Destroy(ReasonRunDone); derr != nil {
				r.log.Warn("destroy after run", "pool", p.Name, "sandbox", id, "error", derr)
			}
			if p.Config.MinIdle > 0 {
				r.warm(p)
			}
		}()
	} else if perr := ref.Put(); perr != nil {
		r.log.Warn("return sandbox after run", "pool", p.Name, "sandbox", id, "error", perr)
	}
	if err != nil {
		return nil, err
	}
	return &api.RunResult{
		Pool: p.Name, Sandbox: id, Outcome: ref.Outcome().String(),
		Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.ExitCode, Truncated: res.Truncated,
	}, nil
}
