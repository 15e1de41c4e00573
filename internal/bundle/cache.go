package bundle

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/aloft-dev/aloft/internal/model"
)

// Cache keeps unpacked bundles on local disk, one directory per sha256, and
// fetches a missing one from the store (after a restart that lost the
// directory, or on another node).
type Cache struct {
	Dir   string
	Fetch func(ctx context.Context, sha string) ([]byte, error)
	// Prepare, when set, runs on a bundle's files before they enter the
	// cache, with the runtime of the function deploying them.
	Prepare func(dir string, rt model.Runtime) error

	mu sync.Mutex // serialises unpacking of the same bundle
}

// Path is where the bundle with this sha256 is unpacked.
func (c *Cache) Path(sha string) string { return filepath.Join(c.Dir, sha) }

// Add unpacks a validated bundle, prepared for rt, unless it is already there.
func (c *Cache) Add(sha string, data []byte, rt model.Runtime) error {
	dir := c.Path(sha)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	var prepare func(string) error
	if c.Prepare != nil {
		prepare = func(tmp string) error { return c.Prepare(tmp, rt) }
	}
	return UnpackPrepared(data, dir, prepare)
}

// CodeDir returns the unpacked code of fn, fetching it when needed.
func (c *Cache) CodeDir(ctx context.Context, fn *model.Function) (string, error) {
	dir := c.Path(fn.CodeSHA256)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	data, err := c.Fetch(ctx, fn.CodeSHA256)
	if err != nil {
		return "", fmt.Errorf("cannot fetch code: %w", err)
	}
	if err := c.Add(fn.CodeSHA256, data, fn.Runtime); err != nil {
		return "", err
	}
	return dir, nil
}

// Remove deletes an unpacked bundle.
func (c *Cache) Remove(sha string) error { return os.RemoveAll(c.Path(sha)) }
