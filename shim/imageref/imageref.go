// Package imageref checks image references in full, with Docker's own
// grammar (github.com/distribution/reference). shim/spec checks only their
// form (present, no space or control character), so that the client, which
// links spec but never resolves an image, does without the reference
// package: its regular expressions are compiled when a program starts, about
// a millisecond of every `ol-shim run`. Every daemon gate an image passes
// (the config, a pool's PUT, a run or acquire by image, the Docker backend)
// checks it here.
package imageref

import (
	"fmt"

	"github.com/distribution/reference"

	"github.com/open-lambda/ol-shim/shim/spec"
)

// Validate reports whether image names a local image: a reference (name,
// name:tag, name@digest) or an image ID. Errors are spec.ErrInvalidSpec.
func Validate(image string) error {
	if err := spec.ValidateImage(image); err != nil {
		return err
	}
	if spec.IsImageID(image) {
		return nil
	}
	if _, err := reference.ParseNormalizedNamed(image); err != nil {
		return fmt.Errorf("%w: image %q: %v", spec.ErrInvalidSpec, image, err)
	}
	return nil
}

// Pool validates a pool's config, its image reference in full.
func Pool(pc spec.PoolConfig) error {
	if err := pc.Validate(); err != nil {
		return err
	}
	return Validate(pc.Image)
}

// Spec validates a pool's container spec, its image reference in full.
func Spec(ps spec.PoolSpec) error {
	if err := ps.Validate(); err != nil {
		return err
	}
	return Validate(ps.Image)
}
