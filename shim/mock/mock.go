// Package mock is the registry's Provider on sandboxset's mock backend,
// with plain scratch directories: ol-shim without Docker, for users trying
// it and for tests of everything above the backend.
package mock

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/registry"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// Provider serves pools from sandboxset's mock backend, with plain
// scratch directories: ol-shim without Docker.
type Provider struct {
	Backend *sandboxset.MockBackend
	scratch sandboxset.DirScratch
}

// New returns a mock provider whose scratch directories are
// under root/scratch.
func New(root string) (*Provider, error) {
	dir := filepath.Join(root, "scratch")
	// Root's alone, as the volumes' directories are (see scratch.Open).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("scratch root: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("scratch root: %w", err)
	}
	return &Provider{Backend: sandboxset.NewMockBackend(), scratch: sandboxset.DirScratch{Root: dir}}, nil
}

// Pool returns the mock backend and the scratch directories.
func (m *Provider) Pool(string, spec.PoolConfig) (sandboxset.Backend, sandboxset.ScratchMaker, error) {
	return m.Backend, m.scratch, nil
}

// Describe returns no container and the mock sandbox's scratch directory.
func (m *Provider) Describe(sb sandboxset.Sandbox) (string, string) {
	if ms, ok := registry.Innermost(sb).(*sandboxset.MockSandbox); ok {
		return "", ms.Spec().ScratchDir
	}
	return "", ""
}

var _ registry.Provider = (*Provider)(nil)
