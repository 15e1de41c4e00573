package store

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Log texts and usage records are written after every invocation; one
// JetStream message each costs more CPU than the invocation itself spends
// in Aloft. They are gathered per subject for a short window and stored as
// one message, whose header lists the sizes of the records it holds, so a
// reader gets the records back one by one. A message without the header is
// one record.
const (
	batchWindow   = 10 * time.Millisecond
	batchMaxBytes = 512 << 10 // under the server's 1 MB message limit
	recordsHeader = "Aloft-Records"
)

// batcher collects records per subject and publishes each subject's
// records as one message when the window ends or the batch is full.
type batcher struct {
	js jetstream.JetStream

	mu      sync.Mutex
	pending map[string]*batch
	order   []string // subjects in the order their first pending record came
	timer   *time.Timer
	err     error // the last publish failure, reported by the next add
}

type batch struct {
	data  []byte
	sizes []int
}

func newBatcher(js jetstream.JetStream) *batcher {
	return &batcher{js: js, pending: make(map[string]*batch)}
}

// add queues rec for subject. It returns the error of a publish that
// failed since the last call, so the caller learns the store is failing.
func (b *batcher) add(subject string, rec []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[subject]
	if p != nil && len(p.data)+len(rec) > batchMaxBytes {
		b.publishLocked(subject, p)
		p = nil
	}
	if p == nil {
		p = &batch{}
		b.pending[subject] = p
		b.order = append(b.order, subject)
	}
	p.data = append(p.data, rec...)
	p.sizes = append(p.sizes, len(rec))
	if b.timer == nil {
		b.timer = time.AfterFunc(batchWindow, b.flush)
	}
	err := b.err
	b.err = nil
	return err
}

// flush publishes every pending batch, in the order their subjects first
// got a record.
func (b *batcher) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	for _, subject := range b.order {
		if p := b.pending[subject]; p != nil {
			b.publishLocked(subject, p)
		}
	}
	b.order = b.order[:0]
}

// publishLocked publishes p without waiting for the acknowledgement and
// removes it from pending; the caller holds b.mu, which keeps each
// subject's messages in order.
func (b *batcher) publishLocked(subject string, p *batch) {
	delete(b.pending, subject)
	m := nats.NewMsg(subject)
	m.Data = p.data
	if len(p.sizes) > 1 {
		sizes := make([]string, len(p.sizes))
		for i, n := range p.sizes {
			sizes[i] = strconv.Itoa(n)
		}
		m.Header.Set(recordsHeader, strings.Join(sizes, ","))
	}
	if _, err := b.js.PublishMsgAsync(m); err != nil {
		b.err = err
	}
}

// records splits a stored message into the records it holds.
func records(m jetstream.Msg) [][]byte {
	data := m.Data()
	sizes := m.Headers().Get(recordsHeader)
	if sizes == "" {
		return [][]byte{data}
	}
	var out [][]byte
	for s := range strings.SplitSeq(sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > len(data) {
			break // not a header Aloft wrote; what is left is one record
		}
		out = append(out, data[:n])
		data = data[n:]
	}
	if len(data) > 0 {
		out = append(out, data)
	}
	return out
}
