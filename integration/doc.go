// Package integration holds the tests of the whole daemon, run as a user
// would: the built programs (ol-shim, ol-shimd, ol-shim-init,
// ol-shim-runtime) against the real dockerd, with real mounts, real docker
// volume and docker run calls. They are tagged integration (make
// integration); the package itself is empty.
package integration
