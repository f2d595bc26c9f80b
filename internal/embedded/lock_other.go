//go:build !unix

package embedded

import (
	"os"
	"path/filepath"
)

// lockDir opens the lock file; without flock (this platform) it does not
// keep a second process out.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
}
