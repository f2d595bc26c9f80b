// Package clerk holds the interop test that runs Clerk's official SDK,
// @clerk/backend (pinned in package-lock.json), against keygate's admin API
// on a real listener over a real redis-server. The test fails, never skips,
// when Node.js or the SDK is missing: `make test` runs `npm ci` in this directory
// when node_modules is missing or older than the lock file.
package clerk
