// Package deploy holds keygate's deployment files: the container image
// (Dockerfile), a compose stack, Kubernetes manifests (k8s/), systemd units
// (systemd/) and forward-auth configurations for proxies (forward-auth/).
//
// It has no code, and is a module of its own so that the libraries its test
// reads the files with (k8s.io/api, kustomize, compose-go, BuildKit,
// go-systemd) stay out of keygate's go.mod. The test builds the keygate
// binary, reads the flags from "keygate serve --help" and "keygate sidecar
// --help", and checks every file here against them: every KEYGATE_*
// variable and flag exists, ports and probe paths are the ones the binary
// serves, images and commands agree.
// It then runs the binary with each configuration (on a test redis-server
// in place of the configured Redis) and walks the README's session through
// it.
package deploy
