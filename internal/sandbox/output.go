package sandbox

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
)

// OutputPipe copies what an instance writes to its stdout and stderr into a
// writer, and can be flushed: Flush returns once everything the instance
// wrote before the call has reached the writer. The worker flushes after an
// invocation's response arrived, so lines the function printed just before
// answering are attributed to that invocation.
//
// The read end is non-blocking and every read+write happens under one mutex,
// which is what makes Flush exact.
type OutputPipe struct {
	r   *os.File
	out io.Writer

	mu   sync.Mutex
	buf  []byte
	done chan struct{}
}

// NewOutputPipe returns the pipe and the write end to hand to the instance
// as its stdout and stderr. The caller closes the write end once the child
// has it.
func NewOutputPipe(out io.Writer) (*OutputPipe, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	p := &OutputPipe{r: r, out: out, buf: make([]byte, 32*1024), done: make(chan struct{})}
	go p.copy()
	return p, w, nil
}

// Done is closed when the write end was closed by every holder and all
// output was copied.
func (p *OutputPipe) Done() <-chan struct{} { return p.done }

func (p *OutputPipe) copy() {
	defer close(p.done)
	rc, err := p.r.SyscallConn()
	if err != nil {
		return
	}
	for {
		eof := false
		err := rc.Read(func(fd uintptr) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			n, err := p.drain(fd)
			if n == 0 && err == nil {
				eof = true
				return true
			}
			return !errors.Is(err, syscall.EAGAIN)
		})
		if err != nil || eof {
			p.r.Close()
			return
		}
	}
}

// drain reads until the pipe is empty (EAGAIN) or at EOF. It returns the
// bytes read by its last read call and that call's error; the caller holds p.mu.
func (p *OutputPipe) drain(fd uintptr) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p.buf)
		if n > 0 {
			p.out.Write(p.buf[:n])
			continue
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return n, err
	}
}

// Flush copies whatever is in the pipe now to the writer.
func (p *OutputPipe) Flush() {
	rc, err := p.r.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		p.mu.Lock()
		p.drain(fd)
		p.mu.Unlock()
	})
}

// Close stops copying.
func (p *OutputPipe) Close() error { return p.r.Close() }
