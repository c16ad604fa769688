package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// MaxOutput bounds what Exec keeps of each of stdout and stderr.
const MaxOutput = 16 << 20

// ExecRequest is a command to run in a sandbox.
type ExecRequest struct {
	Cmd        []string
	Env        []string
	WorkingDir string
	Stdin      []byte // nil: no stdin
}

// ExecResult is what the command printed and how it ended.
type ExecResult struct {
	Stdout    []byte
	Stderr    []byte
	ExitCode  int
	Truncated bool // output past MaxOutput was dropped
}

// Exec runs a command in a running sandbox container, like docker exec,
// and waits for it. The command's failure is its exit code, not an error.
func (s *Sandbox) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	var res ExecResult
	if len(req.Cmd) == 0 || req.Cmd[0] == "" {
		return res, fmt.Errorf("exec in sandbox %s: %w: empty command", s.id, ErrInvalidSpec)
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
	out := &capped{max: MaxOutput}
	errb := &capped{max: MaxOutput}
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
	return ExecResult{Stdout: out.Bytes(), Stderr: errb.Bytes(), ExitCode: insp.ExitCode, Truncated: out.cut || errb.cut}, nil
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
