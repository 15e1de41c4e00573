package queue

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Date(2025, 3, 5, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		enqueued  time.Time
		notBefore time.Time
		want      Action
	}{
		{"fresh", now.Add(-time.Second), time.Time{}, Run},
		{"backoff over", now.Add(-time.Minute), now.Add(-time.Millisecond), Run},
		{"in backoff", now.Add(-time.Minute), now.Add(time.Second), Wait},
		{"exactly max age", now.Add(-time.Hour), time.Time{}, Run},
		{"too old", now.Add(-time.Hour - time.Millisecond), time.Time{}, Expire},
		{"too old while in backoff", now.Add(-2 * time.Hour), now.Add(time.Minute), Expire},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.enqueued, tt.notBefore, time.Hour, now); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	tests := []struct {
		name             string
		attempt, retries int
		want             bool
		wantDelay        time.Duration
	}{
		{"first failure, 2 retries", 1, 2, true, time.Minute},
		{"second failure, 2 retries", 2, 2, true, 2 * time.Minute},
		{"third failure, 2 retries", 3, 2, false, 0},
		{"first failure, no retries", 1, 0, false, 0},
		{"first failure, 1 retry", 1, 1, true, time.Minute},
		{"second failure, 1 retry", 2, 1, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, delay := Retry(tt.attempt, tt.retries, time.Minute)
			if got != tt.want || delay != tt.wantDelay {
				t.Errorf("got %v after %s, want %v after %s", got, delay, tt.want, tt.wantDelay)
			}
		})
	}
}
