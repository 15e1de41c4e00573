package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/model"
)

// maxDeadLetters bounds one listing of a function's dead letters.
const maxDeadLetters = 10000

// DeadLetter is a failed event kept in the dead-letter stream.
type DeadLetter struct {
	ID        string    `json:"id"` // the event's request id
	Function  string    `json:"function"`
	Condition string    `json:"condition"`
	Time      time.Time `json:"time"`
	Attempts  int       `json:"attempts"`
	Record    Record    `json:"record"`
	seq       uint64
	cc        string
}

func (q *Queue) deadLetter(ctx context.Context, name string, ev event, condition string, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	m := nats.NewMsg(DLQPrefix + name)
	m.Data = b
	m.Header.Set(HeaderRequestID, ev.requestID)
	m.Header.Set(HeaderCondition, condition)
	m.Header.Set(HeaderEnqueued, ev.enqueued.UTC().Format(time.RFC3339Nano))
	if ev.clientContext != "" {
		m.Header.Set(HeaderClientContext, ev.clientContext)
	}
	if _, err := q.JS.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("cannot store the dead letter: %w", err)
	}
	return nil
}

// DeadLetters returns function name's dead letters, oldest first.
func (q *Queue) DeadLetters(ctx context.Context, name string) ([]DeadLetter, error) {
	var out []DeadLetter
	subject := DLQPrefix + name
	for seq := uint64(1); len(out) < maxDeadLetters; {
		m, err := q.dlq.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read dead letters: %w", err)
		}
		seq = m.Sequence + 1
		dl := DeadLetter{
			ID: m.Header.Get(HeaderRequestID), Function: name, Condition: m.Header.Get(HeaderCondition),
			Time: m.Time.UTC(), seq: m.Sequence, cc: m.Header.Get(HeaderClientContext),
		}
		if err := json.Unmarshal(m.Data, &dl.Record); err == nil {
			dl.Attempts = dl.Record.RequestContext.ApproximateInvokeCount
		}
		out = append(out, dl)
	}
	return out, nil
}

// DeadLetter returns one dead letter of function name by id; a missing one
// is an error wrapping model.ErrNotFound.
func (q *Queue) DeadLetter(ctx context.Context, name, id string) (DeadLetter, error) {
	dls, err := q.DeadLetters(ctx, name)
	if err != nil {
		return DeadLetter{}, err
	}
	for _, dl := range dls {
		if dl.ID == id {
			return dl, nil
		}
	}
	return DeadLetter{}, fmt.Errorf("dead letter %s of %s: %w", id, name, model.ErrNotFound)
}

// Replay enqueues the dead letters of function name with the given ids
// (none: all) again as new events, and removes them from the dead-letter
// stream. It returns the new request ids in the order of the dead letters.
// An unknown id is an error wrapping model.ErrNotFound, and nothing is
// replayed.
func (q *Queue) Replay(ctx context.Context, name string, ids []string) ([]string, error) {
	dls, err := q.DeadLetters(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(ids) > 0 {
		byID := make(map[string]DeadLetter, len(dls))
		for _, dl := range dls {
			byID[dl.ID] = dl
		}
		dls = dls[:0:0]
		for _, id := range ids {
			dl, ok := byID[id]
			if !ok {
				return nil, fmt.Errorf("dead letter %s of %s: %w", id, name, model.ErrNotFound)
			}
			dls = append(dls, dl)
		}
	}
	out := make([]string, 0, len(dls))
	for _, dl := range dls {
		payload := []byte(dl.Record.RequestPayload)
		if len(payload) == 0 {
			payload = []byte("{}")
		}
		id, err := q.Publish(ctx, name, Event{Payload: payload, ClientContext: dl.cc, ReplayOf: dl.ID})
		if err != nil {
			return out, err
		}
		if err := q.dlq.DeleteMsg(ctx, dl.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, fmt.Errorf("cannot remove dead letter %s: %w", dl.ID, err)
		}
		out = append(out, id)
	}
	return out, nil
}

// Purge removes every dead letter of function name and returns how many
// there were.
func (q *Queue) Purge(ctx context.Context, name string) (int, error) {
	n, err := subjectCount(ctx, q.dlq, DLQPrefix+name)
	if err != nil {
		return 0, err
	}
	if err := q.dlq.Purge(ctx, jetstream.WithPurgeSubject(DLQPrefix+name)); err != nil {
		return 0, fmt.Errorf("cannot purge dead letters: %w", err)
	}
	return n, nil
}
