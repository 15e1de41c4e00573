package model

import (
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Limits and defaults of asynchronous invocation; they follow Lambda's.
const (
	DefaultRetryAttempts = 2
	MaxRetryAttempts     = 2
	DefaultEventAge      = 6 * 60 * 60 // seconds
	MinEventAge          = 60
	MaxEventAge          = 6 * 60 * 60
	MaxAsyncPayload      = 256 * 1024 // request body of an Event invoke
)

// MaxCatchUp bounds how far back a schedule replays missed firings.
const MaxCatchUp = 7 * 24 * time.Hour

// Trigger types.
const (
	TriggerSchedule = "schedule"
	TriggerNATS     = "nats"
)

// Destination is where the record of a finished asynchronous invocation
// goes: another function (invoked asynchronously with the record as its
// event) or a NATS subject. Exactly one is set.
type Destination struct {
	Function string `json:"function,omitempty" yaml:"function"`
	NATS     string `json:"nats,omitempty" yaml:"nats"`
}

// Trigger makes events that invoke the function asynchronously.
type Trigger struct {
	Type string `json:"type" yaml:"type"` // schedule or nats
	// Expression of a schedule: rate(5 minutes), cron(0 12 * * ? *) or a
	// standard 5-field cron expression (UTC).
	Expression string `json:"expression,omitempty" yaml:"expression"`
	// CatchUp asks a schedule to replay the firings it missed while no node
	// ran, when they are at most this old (a duration such as "6h", at most
	// MaxCatchUp). Empty: missed firings are not replayed.
	CatchUp string `json:"catch_up,omitempty" yaml:"catch_up"`
	// Subject of a nats trigger; wildcards allowed.
	Subject string `json:"subject,omitempty" yaml:"subject"`
	// URL of an external NATS server ("" = the embedded one).
	URL string `json:"url,omitempty" yaml:"url"`
	// Durable names a JetStream consumer on the stream holding Subject,
	// so messages published while no node listens are not lost.
	Durable string `json:"durable,omitempty" yaml:"durable"`
}

// EventAge is the function's maximum event age.
func (c Config) EventAge() time.Duration {
	if c.MaximumEventAge == 0 {
		return DefaultEventAge * time.Second
	}
	return time.Duration(c.MaximumEventAge) * time.Second
}

// RetryAttempts is the function's maximum number of retries of a failed
// asynchronous invocation.
func (c Config) RetryAttempts() int {
	if c.MaximumRetryAttempts == nil {
		return DefaultRetryAttempts
	}
	return *c.MaximumRetryAttempts
}

var (
	subjectTokenRE = regexp.MustCompile(`^[^\s.*>]+$`)
	durableRE      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// ValidSubject reports whether s is a NATS subject; with wildcards it may
// hold * tokens and a final > token.
func ValidSubject(s string, wildcards bool) bool {
	if s == "" {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case wildcards && t == "*":
		case wildcards && t == ">" && i == len(toks)-1:
		case !subjectTokenRE.MatchString(t):
			return false
		}
	}
	return true
}

// reservedSubject reports whether s falls in the platform's own subject
// space, which destinations and triggers may not use.
func reservedSubject(s string) bool {
	return strings.HasPrefix(s, "$") || s == "aloft" || strings.HasPrefix(s, "aloft.") || s == ">"
}

func (c Config) normalizeAsync() (Config, error) {
	if c.MaximumRetryAttempts == nil {
		n := DefaultRetryAttempts
		c.MaximumRetryAttempts = &n
	} else {
		n := *c.MaximumRetryAttempts // copy: the caller's pointer stays theirs
		if n < 0 || n > MaxRetryAttempts {
			return c, invalidf("maximum_retry_attempts %d is outside 0-%d", n, MaxRetryAttempts)
		}
		c.MaximumRetryAttempts = &n
	}
	if c.MaximumEventAge == 0 {
		c.MaximumEventAge = DefaultEventAge
	}
	if c.MaximumEventAge < MinEventAge || c.MaximumEventAge > MaxEventAge {
		return c, invalidf("maximum_event_age %d s is outside %d-%d", c.MaximumEventAge, MinEventAge, MaxEventAge)
	}
	for _, d := range []struct {
		key string
		d   **Destination
	}{{"on_success", &c.OnSuccess}, {"on_failure", &c.OnFailure}} {
		if *d.d == nil {
			continue
		}
		dst := **d.d
		switch {
		case (dst.Function == "") == (dst.NATS == ""):
			return c, invalidf("%s must name exactly one of function or nats", d.key)
		case dst.Function != "" && !ValidName(dst.Function):
			return c, invalidf("%s function %q must match [A-Za-z0-9_-]{1,64}", d.key, dst.Function)
		case dst.NATS != "" && (!ValidSubject(dst.NATS, false) || reservedSubject(dst.NATS)):
			return c, invalidf("%s nats %q is not a NATS subject outside $… and aloft.…", d.key, dst.NATS)
		}
		*d.d = &dst
	}
	if len(c.Triggers) > 0 {
		c.Triggers = append([]Trigger(nil), c.Triggers...)
	}
	for i, t := range c.Triggers {
		switch t.Type {
		case TriggerSchedule:
			if strings.TrimSpace(t.Expression) == "" {
				return c, invalidf("triggers[%d]: a schedule needs an expression", i)
			}
			if t.Subject != "" || t.URL != "" || t.Durable != "" {
				return c, invalidf("triggers[%d]: a schedule takes only an expression and catch_up", i)
			}
			if t.CatchUp != "" {
				if d, err := time.ParseDuration(t.CatchUp); err != nil || d <= 0 || d > MaxCatchUp {
					return c, invalidf("triggers[%d]: catch_up %q must be a duration up to %v (such as 6h)", i, t.CatchUp, MaxCatchUp)
				}
			}
		case TriggerNATS:
			if !ValidSubject(t.Subject, true) {
				return c, invalidf("triggers[%d]: subject %q is not a NATS subject", i, t.Subject)
			}
			if t.URL == "" && reservedSubject(t.Subject) {
				return c, invalidf("triggers[%d]: subject %q is reserved by the platform", i, t.Subject)
			}
			if t.Expression != "" || t.CatchUp != "" {
				return c, invalidf("triggers[%d]: a nats trigger takes no expression or catch_up", i)
			}
			if t.URL != "" {
				u, err := url.Parse(t.URL)
				if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
					return c, invalidf("triggers[%d]: url %q must be nats://host:port or tls://host:port", i, t.URL)
				}
			}
			if t.Durable != "" && !durableRE.MatchString(t.Durable) {
				return c, invalidf("triggers[%d]: durable %q must match [A-Za-z0-9_-]{1,64}", i, t.Durable)
			}
		case "":
			return c, invalidf("triggers[%d]: type is required (schedule or nats)", i)
		default:
			return c, invalidf("triggers[%d]: type %q is not one of schedule, nats", i, t.Type)
		}
	}
	return c, nil
}
