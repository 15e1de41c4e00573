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

	mu sync.Mutex // serialises unpacking of the same bundle
}

// Path is where the bundle with this sha256 is unpacked.
func (c *Cache) Path(sha string) string { return filepath.Join(c.Dir, sha) }

// Add unpacks a validated bundle unless it is already there.
func (c *Cache) Add(sha string, data []byte) error {
	dir := c.Path(sha)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	return Unpack(data, dir)
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
	if err := c.Add(fn.CodeSHA256, data); err != nil {
		return "", err
	}
	return dir, nil
}

// Remove deletes an unpacked bundle.
func (c *Cache) Remove(sha string) error { return os.RemoveAll(c.Path(sha)) }
