package worker

import (
	"fmt"
	"sync"
)

// logBuffer collects an instance's output for the invocation in progress.
// It keeps at most max bytes and counts the rest, so a log flood costs the
// node a bounded amount of memory; the function is never blocked.
type logBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	room := b.max - len(b.buf)
	if room >= len(p) {
		b.buf = append(b.buf, p...)
	} else {
		if room > 0 {
			b.buf = append(b.buf, p[:room]...)
		}
		b.dropped += int64(len(p) - max(room, 0))
	}
	b.mu.Unlock()
	return len(p), nil
}

// take returns what was collected, with a truncation marker when output was
// dropped, and starts over.
func (b *logBuffer) take() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.buf
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	if b.dropped > 0 {
		out = fmt.Appendf(out, "[aloft] log output truncated: %d bytes over the %d-byte limit per invocation were dropped\n", b.dropped, b.max)
	}
	b.buf, b.dropped = nil, 0
	return out
}
