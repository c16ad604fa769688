package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Exec runs a command in a running sandbox container, like docker exec,
// and waits for it. The command's failure is its exit code, not an error.
func (s *Sandbox) Exec(ctx context.Context, req registry.ExecRequest) (registry.ExecResult, error) {
	var res registry.ExecResult
	if len(req.Cmd) == 0 || req.Cmd[0] == "" {
		return res, fmt.Errorf("exec in sandbox %s: %w: empty command", s.id, spec.ErrInvalidSpec)
	}
	cctx, cancel := s.d.callCtx(ctx)
	ex, err := s.d.cli.ExecCreate(cctx, s.container, client.ExecCreateOptions{
		Cmd: req.Cmd, Env: req.Env, WorkingDir: req.WorkingDir,
		AttachStdin: req.Stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	cancel()
	if err != nil {
		return res, fmt.Errorf("exec in sandbox %s: %w", s.id, err)
	}
	att, err := s.d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return res, fmt.Errorf("exec in sandbox %s: attach: %w", s.id, err)
	}
	defer att.Close()
	if req.Stdin != nil {
		go func() {
			_, _ = att.Conn.Write(req.Stdin)
			_ = att.CloseWrite()
		}()
	}
	// Stop reading when ctx ends (the hijacked connection has no deadline).
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	out := &capped{max: api.MaxOutput}
	errb := &capped{max: api.MaxOutput}
	if _, err := stdcopy.StdCopy(out, errb, att.Reader); err != nil && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			return res, fmt.Errorf("exec in sandbox %s: %w", s.id, ctx.Err())
		}
		return res, fmt.Errorf("exec in sandbox %s: read output: %w", s.id, err)
	}
	cctx, cancel = s.d.callCtx(ctx)
	defer cancel()
	insp, err := s.d.cli.ExecInspect(cctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		return res, fmt.Errorf("exec in sandbox %s: inspect: %w", s.id, err)
	}
	if insp.Running {
		return res, fmt.Errorf("exec in sandbox %s: output closed while the command still runs", s.id)
	}
	return registry.ExecResult{Stdout: out.Bytes(), Stderr: errb.Bytes(), ExitCode: insp.ExitCode, Truncated: out.cut || errb.cut}, nil
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	bytes.Buffer
	max int
	cut bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room < len(p) {
		c.cut = true
		c.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.Buffer.Write(p)
}
