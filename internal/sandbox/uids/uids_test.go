package uids

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// isolate points the package at a fresh lock directory and the given
// account files (none by default).
func isolate(t *testing.T, files ...accountFile) {
	t.Helper()
	oldDir, oldFiles := LockDir, accountFiles
	LockDir, accountFiles = t.TempDir(), files
	t.Cleanup(func() { LockDir, accountFiles = oldDir, oldFiles })
}

func claim(t *testing.T) *Allocator {
	t.Helper()
	a, err := Claim()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestClaimsTakeSeparateBlocks(t *testing.T) {
	isolate(t)
	a, b := claim(t), claim(t)
	ida, _ := a.Get()
	idb, _ := b.Get()
	if ida != First || idb != First+BlockSize {
		t.Fatalf("first ids %d and %d, want %d and %d", ida, idb, First, First+BlockSize)
	}
	if b.Contains(ida) || !a.Contains(ida) {
		t.Fatal("Contains disagrees with the blocks")
	}
	// A closed block is free again.
	a.Close()
	c := claim(t)
	if id, _ := c.Get(); id != First {
		t.Fatalf("after Close the next claim starts at %d, want %d", id, First)
	}
}

func TestBlocksOverlappingHostAccountsAreSkipped(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	subuid := filepath.Join(dir, "subuid")
	os.WriteFile(passwd, []byte(fmt.Sprintf("root:x:0:0::/root:/bin/sh\nodd:x:%d:%d::/:/bin/sh\n", First+5, 100)), 0o644)
	os.WriteFile(subuid, []byte(fmt.Sprintf("user:%d:%d\n", First+BlockSize+10, BlockSize)), 0o644)
	isolate(t, accountFile{passwd, []int{2, 3}, false}, accountFile{subuid, []int{1}, true})
	// Block 0 holds a passwd uid; blocks 1 and 2 the subuid range.
	if id, _ := claim(t).Get(); id != First+3*BlockSize {
		t.Fatalf("first id %d, want %d (block 3)", id, First+3*BlockSize)
	}
}

func TestIDsGoRoundAndRunOut(t *testing.T) {
	isolate(t)
	a := claim(t)
	first, _ := a.Get()
	a.Put(first)
	second, _ := a.Get()
	if second == first {
		t.Fatalf("a released id came back at once (%d); want the next one first", first)
	}
	seen := map[int]bool{second: true}
	for len(seen) < BlockSize {
		id, err := a.Get()
		if err != nil {
			t.Fatalf("after %d ids: %v", len(seen), err)
		}
		if seen[id] || !a.Contains(id) {
			t.Fatalf("id %d handed out twice or outside the block", id)
		}
		seen[id] = true
	}
	if _, err := a.Get(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Get with every id in use: %v, want ErrExhausted", err)
	}
	a.Put(second)
	if id, err := a.Get(); err != nil || id != second {
		t.Fatalf("after Put(%d): %d, %v; want it back", second, id, err)
	}
}
