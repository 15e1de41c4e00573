package triggers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

func TestParseSchedule(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// 2025-03-05 was a Wednesday.
	tests := []struct {
		name    string
		expr    string
		from    string
		want    []string // successive firing times
		wantErr string
	}{
		{name: "rate minutes", expr: "rate(5 minutes)", from: "2025-03-05T10:02:30Z",
			want: []string{"2025-03-05T10:05:00Z", "2025-03-05T10:10:00Z"}},
		{name: "rate one minute", expr: "rate(1 minute)", from: "2025-03-05T10:02:00Z",
			want: []string{"2025-03-05T10:03:00Z", "2025-03-05T10:04:00Z"}},
		{name: "rate hours", expr: "rate(2 hours)", from: "2025-03-05T10:02:00Z",
			want: []string{"2025-03-05T12:00:00Z", "2025-03-05T14:00:00Z"}},
		{name: "rate day", expr: "rate(1 day)", from: "2025-03-05T10:02:00Z",
			want: []string{"2025-03-06T00:00:00Z"}},
		{name: "eventbridge cron noon", expr: "cron(0 12 * * ? *)", from: "2025-03-05T10:00:00Z",
			want: []string{"2025-03-05T12:00:00Z", "2025-03-06T12:00:00Z"}},
		{name: "eventbridge weekdays by number", expr: "cron(15 10 ? * 2-6 *)", from: "2025-03-07T11:00:00Z", // Friday
			want: []string{"2025-03-10T10:15:00Z", "2025-03-11T10:15:00Z"}}, // Monday, Tuesday
		{name: "eventbridge sunday is 1", expr: "cron(0 8 ? * 1 *)", from: "2025-03-05T00:00:00Z",
			want: []string{"2025-03-09T08:00:00Z", "2025-03-16T08:00:00Z"}},
		{name: "eventbridge day names", expr: "cron(0 18 ? * MON-FRI *)", from: "2025-03-07T19:00:00Z",
			want: []string{"2025-03-10T18:00:00Z"}},
		{name: "eventbridge month names", expr: "cron(0 0 1 JUL ? *)", from: "2025-03-05T00:00:00Z",
			want: []string{"2025-07-01T00:00:00Z", "2026-07-01T00:00:00Z"}},
		{name: "eventbridge year", expr: "cron(0 0 1 1 ? 2027)", from: "2025-03-05T00:00:00Z",
			want: []string{"2027-01-01T00:00:00Z"}},
		{name: "eventbridge year range ends", expr: "cron(0 0 1 1 ? 2026-2027)", from: "2026-06-01T00:00:00Z",
			want: []string{"2027-01-01T00:00:00Z", "0001-01-01T00:00:00Z"}},
		{name: "eventbridge step", expr: "cron(0/15 * * * ? *)", from: "2025-03-05T10:07:00Z",
			want: []string{"2025-03-05T10:15:00Z", "2025-03-05T10:30:00Z"}},
		{name: "standard cron", expr: "30 4 * * 1", from: "2025-03-05T00:00:00Z", // cron's 1 = Monday
			want: []string{"2025-03-10T04:30:00Z"}},
		{name: "descriptor", expr: "@hourly", from: "2025-03-05T10:02:00Z",
			want: []string{"2025-03-05T11:00:00Z"}},
		{name: "rate without unit", expr: "rate(5)", wantErr: "want rate(VALUE UNIT)"},
		{name: "rate zero", expr: "rate(0 minutes)", wantErr: "positive whole number"},
		{name: "rate seconds", expr: "rate(10 seconds)", wantErr: "minutes, hours or days"},
		{name: "rate plural one", expr: "rate(1 minutes)", wantErr: "rate(1 minute)"},
		{name: "rate singular many", expr: "rate(5 minute)", wantErr: "rate(N minutes)"},
		{name: "rate of 100 years", expr: "rate(36500 days)", from: "2025-03-05T10:02:00Z", want: []string{"2069-12-07T00:00:00Z"}},
		{name: "rate over 100 years", expr: "rate(36501 days)", wantErr: "at most 36500 days"},
		{name: "rate whose period overflows", expr: "rate(9007199254740992 minutes)", wantErr: "at most 36500 days"},
		{name: "cron five fields in cron()", expr: "cron(0 12 * * ?)", wantErr: "six fields"},
		{name: "cron both days", expr: "cron(0 12 * * * *)", wantErr: "exactly one of"},
		{name: "cron both question marks", expr: "cron(0 12 ? * ? *)", wantErr: "exactly one of"},
		{name: "cron L", expr: "cron(0 12 L * ? *)", wantErr: "L, W and # are not supported"},
		{name: "cron hash", expr: "cron(0 12 ? * 6#3 *)", wantErr: "L, W and # are not supported"},
		{name: "cron dow 8", expr: "cron(0 12 ? * 8 *)", wantErr: "outside 1-7"},
		{name: "cron bad year", expr: "cron(0 12 * * ? 1800)", wantErr: "within 1970-2199"},
		{name: "cron bad minute", expr: "cron(61 12 * * ? *)", wantErr: "cron(61 12 * * ? *)"},
		{name: "every", expr: "@every 5m", wantErr: "use rate"},
		{name: "garbage", expr: "every five minutes", wantErr: "schedule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.expr, time.Minute)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, model.ErrInvalid) {
					t.Errorf("got error %v, want one wrapping model.ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			cur := at(tt.from)
			for i, w := range tt.want {
				got := s.Next(cur)
				if !got.Equal(at(w)) {
					t.Fatalf("firing %d after %s: got %s, want %s", i+1, cur.Format(time.RFC3339), got.Format(time.RFC3339), w)
				}
				cur = got
			}
		})
	}
}

func TestRateMinuteLength(t *testing.T) {
	s, err := ParseSchedule("rate(2 minutes)", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2025, 3, 5, 10, 0, 0, 500_000_000, time.UTC)
	if got, want := s.Next(from), time.Date(2025, 3, 5, 10, 0, 2, 0, time.UTC); !got.Equal(want) {
		t.Errorf("got %s, want %s", got, want)
	}
}
