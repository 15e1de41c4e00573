package triggers

import (
	"errors"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

// FuzzParseSchedule: any schedule expression is either refused as bad
// input or gives firing times strictly after the time asked about (or none),
// so a trigger can never fire in a loop or crash the node.
func FuzzParseSchedule(f *testing.F) {
	for _, seed := range []string{
		"rate(1 minute)", "rate(5 minutes)", "rate(2 hours)", "rate(1 day)",
		"rate(9223372036854775807 minutes)", "rate(153722867280912930 minutes)",
		"cron(0 12 * * ? *)", "cron(15 10 ? * 6L 2002-2005)", "cron(0/5 8-17 ? * MON-FRI *)",
		"cron(0 0 1 1 ? 1970)", "cron(0 0 31 2 ? *)", "*/5 * * * *", "@hourly", "0 0 30 2 *",
		"@every 1s", "TZ=UTC 0 * * * *", "", "rate()", "cron()",
	} {
		f.Add(seed)
	}
	at := []time.Time{time.Unix(0, 0).UTC(), time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC), time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC)}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := ParseSchedule(expr, time.Minute)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("ParseSchedule(%q): %v, want an ErrInvalid error", expr, err)
			}
			return
		}
		for _, now := range at {
			if next := s.Next(now); !next.IsZero() && !next.After(now) {
				t.Fatalf("ParseSchedule(%q).Next(%v) = %v, not after it", expr, now, next)
			}
		}
	})
}
