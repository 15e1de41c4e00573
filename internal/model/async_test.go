package model

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeAsync(t *testing.T) {
	two, zero, three := 2, 0, 3
	tests := []struct {
		name    string
		cfg     Config
		check   func(Config) string // "" when fine
		wantErr string
	}{
		{name: "defaults", cfg: Config{}, check: func(c Config) string {
			if c.MaximumRetryAttempts == nil || *c.MaximumRetryAttempts != 2 || c.MaximumEventAge != 21600 {
				return "want 2 retries and 21600 s"
			}
			return ""
		}},
		{name: "zero retries kept", cfg: Config{MaximumRetryAttempts: &zero}, check: func(c Config) string {
			if *c.MaximumRetryAttempts != 0 || c.RetryAttempts() != 0 {
				return "want 0 retries"
			}
			return ""
		}},
		{name: "explicit two", cfg: Config{MaximumRetryAttempts: &two, MaximumEventAge: 60}},
		{name: "destinations", cfg: Config{OnSuccess: &Destination{Function: "next"}, OnFailure: &Destination{NATS: "jobs.failed"}}},
		{name: "triggers", cfg: Config{Triggers: []Trigger{
			{Type: "schedule", Expression: "rate(5 minutes)"},
			{Type: "nats", Subject: "orders.*.created"},
			{Type: "nats", Subject: ">", URL: "nats://example:4222", Durable: "d1"},
		}}},
		{name: "too many retries", cfg: Config{MaximumRetryAttempts: &three}, wantErr: "maximum_retry_attempts 3 is outside 0-2"},
		{name: "age too small", cfg: Config{MaximumEventAge: 59}, wantErr: "maximum_event_age 59 s"},
		{name: "age too large", cfg: Config{MaximumEventAge: 21601}, wantErr: "maximum_event_age 21601 s"},
		{name: "empty destination", cfg: Config{OnSuccess: &Destination{}}, wantErr: "on_success must name exactly one"},
		{name: "both destinations", cfg: Config{OnFailure: &Destination{Function: "a", NATS: "b"}}, wantErr: "on_failure must name exactly one"},
		{name: "bad destination function", cfg: Config{OnFailure: &Destination{Function: "a b"}}, wantErr: "on_failure function"},
		{name: "wildcard destination", cfg: Config{OnFailure: &Destination{NATS: "a.*"}}, wantErr: "on_failure nats"},
		{name: "reserved destination", cfg: Config{OnFailure: &Destination{NATS: "aloft.async.x"}}, wantErr: "on_failure nats"},
		{name: "no trigger type", cfg: Config{Triggers: []Trigger{{}}}, wantErr: "triggers[0]: type is required"},
		{name: "unknown trigger type", cfg: Config{Triggers: []Trigger{{Type: "sqs"}}}, wantErr: `type "sqs" is not one of`},
		{name: "schedule without expression", cfg: Config{Triggers: []Trigger{{Type: "schedule"}}}, wantErr: "needs an expression"},
		{name: "schedule with subject", cfg: Config{Triggers: []Trigger{{Type: "schedule", Expression: "rate(1 day)", Subject: "x"}}}, wantErr: "takes only an expression"},
		{name: "bad subject", cfg: Config{Triggers: []Trigger{{Type: "nats", Subject: "a..b"}}}, wantErr: "is not a NATS subject"},
		{name: "gt not last", cfg: Config{Triggers: []Trigger{{Type: "nats", Subject: "a.>.b"}}}, wantErr: "is not a NATS subject"},
		{name: "reserved subject", cfg: Config{Triggers: []Trigger{{Type: "nats", Subject: "aloft.>"}}}, wantErr: "reserved by the platform"},
		{name: "everything on the embedded server", cfg: Config{Triggers: []Trigger{{Type: "nats", Subject: ">"}}}, wantErr: "reserved by the platform"},
		{name: "bad url", cfg: Config{Triggers: []Trigger{{Type: "nats", Subject: "a", URL: "http://x"}}}, wantErr: "must be nats://"},
		{name: "bad durable", cfg: Config{Triggers: []Trigger{{Type: "nats", Subject: "a", Durable: "a.b"}}}, wantErr: "durable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Name, tt.cfg.Runtime = "fn", RuntimeProvided
			got, err := tt.cfg.Normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("got error %v, want ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if tt.check != nil {
				if msg := tt.check(got); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}
