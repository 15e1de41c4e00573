package triggers

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/aloft-dev/aloft/internal/model"
)

// Schedule gives the firing times of a schedule expression.
type Schedule interface {
	// Next returns the first firing time strictly after t, or the zero
	// time when there is none.
	Next(t time.Time) time.Time
}

// ParseSchedule parses a schedule expression: EventBridge's rate(5 minutes)
// and cron(0 12 * * ? *), or a standard 5-field cron expression (and its
// @hourly-style descriptors). Times are UTC. minute is how long a minute
// lasts in rate expressions (time.Minute; tests shorten it).
func ParseSchedule(expr string, minute time.Duration) (Schedule, error) {
	expr = strings.TrimSpace(expr)
	if minute <= 0 {
		minute = time.Minute
	}
	switch {
	case strings.HasPrefix(expr, "rate(") && strings.HasSuffix(expr, ")"):
		return parseRate(expr[len("rate("):len(expr)-1], minute)
	case strings.HasPrefix(expr, "cron(") && strings.HasSuffix(expr, ")"):
		return parseEventBridgeCron(expr[len("cron(") : len(expr)-1])
	case strings.HasPrefix(expr, "@every"):
		return nil, model.Invalidf("schedule %q: @every is not supported; use rate(…)", expr)
	case strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ="):
		return nil, model.Invalidf("schedule %q: schedules are in UTC; time zones are not supported", expr)
	}
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, model.Invalidf("schedule %q: %v", expr, err)
	}
	return utc{s}, nil
}

// rate fires every period, at multiples of it since the Unix epoch, so
// every node computes the same firing times.
type rate struct{ period time.Duration }

func (r rate) Next(t time.Time) time.Time {
	n := t.UnixNano()/int64(r.period) + 1
	return time.Unix(0, n*int64(r.period)).UTC()
}

func parseRate(s string, minute time.Duration) (Schedule, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return nil, model.Invalidf("schedule rate(%s): want rate(VALUE UNIT), e.g. rate(5 minutes)", s)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 {
		return nil, model.Invalidf("schedule rate(%s): the value must be a positive whole number", s)
	}
	var perUnit int // minutes
	switch f[1] {
	case "minute", "minutes":
		perUnit = 1
	case "hour", "hours":
		perUnit = 60
	case "day", "days":
		perUnit = 24 * 60
	default:
		return nil, model.Invalidf("schedule rate(%s): the unit must be minutes, hours or days", s)
	}
	if (n == 1) != !strings.HasSuffix(f[1], "s") {
		return nil, model.Invalidf("schedule rate(%s): write rate(1 %s) for one and rate(N %ss) for more", s,
			strings.TrimSuffix(f[1], "s"), strings.TrimSuffix(f[1], "s"))
	}
	if n > maxRateMinutes/perUnit {
		return nil, model.Invalidf("schedule rate(%s): the period must be at most %d days", s, maxRateMinutes/(24*60))
	}
	return rate{period: time.Duration(n*perUnit) * minute}, nil
}

// maxRateMinutes bounds a rate's period (100 years), so that it is a
// positive time.Duration.
const maxRateMinutes = 100 * 365 * 24 * 60

// utc evaluates a cron schedule in UTC.
type utc struct{ s cron.Schedule }

func (u utc) Next(t time.Time) time.Time { return u.s.Next(t.UTC()) }

// parseEventBridgeCron translates EventBridge's six fields (minutes hours
// day-of-month month day-of-week year; one of the day fields is ?;
// day-of-week counts 1-7 from Sunday) into a standard cron schedule plus a
// year filter.
func parseEventBridgeCron(s string) (Schedule, error) {
	f := strings.Fields(s)
	if len(f) != 6 {
		return nil, model.Invalidf("schedule cron(%s): want six fields: minutes hours day-of-month month day-of-week year", s)
	}
	if (f[2] == "?") == (f[4] == "?") {
		return nil, model.Invalidf("schedule cron(%s): exactly one of day-of-month and day-of-week must be ?", s)
	}
	for _, field := range f {
		if strings.ContainsAny(field, "LW#") && !isNames(field) {
			return nil, model.Invalidf("schedule cron(%s): L, W and # are not supported", s)
		}
	}
	dow, err := shiftDOW(f[4])
	if err != nil {
		return nil, model.Invalidf("schedule cron(%s): %v", s, err)
	}
	std := strings.Join([]string{f[0], f[1], f[2], f[3], dow}, " ")
	cs, err := cron.ParseStandard(std)
	if err != nil {
		return nil, model.Invalidf("schedule cron(%s): %v", s, err)
	}
	years, err := parseYears(f[5])
	if err != nil {
		return nil, model.Invalidf("schedule cron(%s): %v", s, err)
	}
	if years == nil {
		return utc{cs}, nil
	}
	return yearFiltered{s: cs, years: years}, nil
}

// isNames reports whether a field holds month or day names (whose letters
// include L and W, as in JUL or WED) rather than the L, W and # operators.
func isNames(field string) bool {
	for _, part := range strings.FieldsFunc(field, func(r rune) bool { return r == ',' || r == '-' || r == '/' }) {
		if len(part) != 3 {
			return false
		}
		for _, r := range part {
			if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') {
				return false
			}
		}
	}
	return true
}

// shiftDOW turns EventBridge's day-of-week numbers (1 = Sunday … 7 =
// Saturday) into cron's (0 = Sunday … 6); names and * stay.
func shiftDOW(field string) (string, error) {
	if field == "?" || field == "*" {
		return field, nil
	}
	items := strings.Split(field, ",")
	for i, item := range items {
		rng, step, hasStep := strings.Cut(item, "/")
		bounds := strings.Split(rng, "-")
		if len(bounds) > 2 {
			return "", fmt.Errorf("day-of-week %q is not a range", item)
		}
		for j, b := range bounds {
			if b == "*" {
				continue
			}
			n, err := strconv.Atoi(b)
			if err != nil {
				continue // a name such as MON
			}
			if n < 1 || n > 7 {
				return "", fmt.Errorf("day-of-week %d is outside 1-7", n)
			}
			bounds[j] = strconv.Itoa(n - 1)
		}
		items[i] = strings.Join(bounds, "-")
		if hasStep {
			items[i] += "/" + step
		}
	}
	return strings.Join(items, ","), nil
}

// parseYears reads the year field: * (nil: every year), or a list of years
// and year ranges, with optional /step.
func parseYears(field string) (map[int]bool, error) {
	if field == "*" {
		return nil, nil
	}
	years := map[int]bool{}
	for _, item := range strings.Split(field, ",") {
		rng, stepS, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			var err error
			if step, err = strconv.Atoi(stepS); err != nil || step < 1 {
				return nil, fmt.Errorf("year step %q is not a positive number", stepS)
			}
		}
		lo, hi := 1970, 2199
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err1, err2 error
			lo, err1 = strconv.Atoi(a)
			hi = lo
			if isRange {
				hi, err2 = strconv.Atoi(b)
			} else if hasStep {
				hi = 2199
			}
			if err1 != nil || err2 != nil || lo < 1970 || hi > 2199 || lo > hi {
				return nil, fmt.Errorf("year %q is not a year or range within 1970-2199", item)
			}
		}
		for y := lo; y <= hi; y += step {
			years[y] = true
		}
	}
	return years, nil
}

// yearFiltered fires at a cron schedule's times that fall in given years.
type yearFiltered struct {
	s     cron.Schedule
	years map[int]bool
}

func (y yearFiltered) Next(t time.Time) time.Time {
	t = t.UTC()
	for range 300 { // years to look ahead
		n := y.s.Next(t)
		if n.IsZero() {
			return n
		}
		if y.years[n.Year()] {
			return n
		}
		// Jump to the end of the year before the next matching one.
		next := 0
		for yr := n.Year() + 1; yr <= 2199; yr++ {
			if y.years[yr] {
				next = yr
				break
			}
		}
		if next == 0 {
			return time.Time{}
		}
		t = time.Date(next, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond)
	}
	return time.Time{}
}
