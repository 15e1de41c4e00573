package model

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeDefaults(t *testing.T) {
	tests := []struct {
		name        string
		runtime     Runtime
		wantHandler string
	}{
		{"provided", RuntimeProvided, "bootstrap"},
		{"go", RuntimeGo, "bootstrap"},
		{"node", RuntimeNode, "index.handler"},
		{"python", RuntimePython, "main.handler"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Config{Name: "fn", Runtime: tt.runtime}.Normalize()
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got.Handler != tt.wantHandler {
				t.Errorf("handler=%q, want %q", got.Handler, tt.wantHandler)
			}
			if got.Memory != 128 || got.Timeout != 3 || got.EphemeralStorage != 512 {
				t.Errorf("memory=%d timeout=%d tmp=%d, want 128 3 512", got.Memory, got.Timeout, got.EphemeralStorage)
			}
			if got.URLAuth != "none" || got.Network != "none" {
				t.Errorf("url_auth=%q network=%q, want none none", got.URLAuth, got.Network)
			}
			if got.ReservedConcurrency != nil || got.ProvisionedConcurrency != 0 {
				t.Errorf("reserved=%v provisioned=%d, want nil 0", got.ReservedConcurrency, got.ProvisionedConcurrency)
			}
			if got.Reserved() != -1 {
				t.Errorf("Reserved()=%d, want -1", got.Reserved())
			}
		})
	}
}

// TestNormalizeKeeps checks that explicit valid values survive unchanged,
// at both ends of every range.
func TestNormalizeKeeps(t *testing.T) {
	zero, thousand := 0, 1000
	tests := []struct {
		name  string
		cfg   Config
		check func(Config) bool
	}{
		{"max name", Config{Name: strings.Repeat("a", 64)}, func(c Config) bool { return len(c.Name) == 64 }},
		{"name charset", Config{Name: "Fn_1-x"}, func(c Config) bool { return c.Name == "Fn_1-x" }},
		{"custom handler", Config{Handler: "run"}, func(c Config) bool { return c.Handler == "run" }},
		{"min memory", Config{Memory: 128}, func(c Config) bool { return c.Memory == 128 }},
		{"max memory", Config{Memory: 10240}, func(c Config) bool { return c.Memory == 10240 }},
		{"min timeout", Config{Timeout: 1}, func(c Config) bool { return c.Timeout == 1 }},
		{"max timeout", Config{Timeout: 900}, func(c Config) bool { return c.Timeout == 900 }},
		{"max tmp", Config{EphemeralStorage: 10240}, func(c Config) bool { return c.EphemeralStorage == 10240 }},
		{"token auth", Config{URLAuth: "token"}, func(c Config) bool { return c.URLAuth == "token" }},
		{"outbound", Config{Network: "outbound"}, func(c Config) bool { return c.Network == "outbound" }},
		{"env", Config{Env: map[string]string{"A": "1", "b_2": "x"}}, func(c Config) bool { return c.Env["b_2"] == "x" }},
		{"env at limit", Config{Env: map[string]string{"K": strings.Repeat("v", 4095)}}, func(c Config) bool { return len(c.Env["K"]) == 4095 }},
		{"reserved zero disables", Config{ReservedConcurrency: &zero}, func(c Config) bool { return c.Reserved() == 0 }},
		{"concurrency max", Config{ReservedConcurrency: &thousand, ProvisionedConcurrency: 1000}, func(c Config) bool {
			return c.Reserved() == 1000 && c.ProvisionedConcurrency == 1000
		}},
		{"provisioned without reservation", Config{ProvisionedConcurrency: 5}, func(c Config) bool { return c.ProvisionedConcurrency == 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Name == "" {
				tt.cfg.Name = "fn"
			}
			tt.cfg.Runtime = RuntimeProvided
			got, err := tt.cfg.Normalize()
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !tt.check(got) {
				t.Errorf("got %+v, value not kept", got)
			}
		})
	}
}

func TestNormalizeInvalid(t *testing.T) {
	neg, over, two := -1, 1001, 2
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // the whole message after "invalid parameter: "
	}{
		{"empty name", Config{Runtime: "go"}, `name "" must match [A-Za-z0-9_-]{1,64}`},
		{"long name", Config{Name: strings.Repeat("a", 65), Runtime: "go"}, `name "` + strings.Repeat("a", 65) + `" must match [A-Za-z0-9_-]{1,64}`},
		{"name with dot", Config{Name: "a.b", Runtime: "go"}, `name "a.b" must match [A-Za-z0-9_-]{1,64}`},
		{"name with slash", Config{Name: "../x", Runtime: "go"}, `name "../x" must match [A-Za-z0-9_-]{1,64}`},
		{"no runtime", Config{Name: "fn"}, "runtime is required (provided, go, node or python)"},
		{"unknown runtime", Config{Name: "fn", Runtime: "java"}, `runtime "java" is not one of provided, go, node, python`},
		{"node handler without dot", Config{Name: "fn", Runtime: "node", Handler: "index"}, `handler "index" must have the form file.export`},
		{"node handler trailing dot", Config{Name: "fn", Runtime: "node", Handler: "index."}, `handler "index." must have the form file.export`},
		{"python handler leading dot", Config{Name: "fn", Runtime: "python", Handler: ".handler"}, `handler ".handler" must have the form module.function`},
		{"memory low", Config{Name: "fn", Runtime: "go", Memory: 127}, "memory 127 MB is outside 128-10240"},
		{"memory high", Config{Name: "fn", Runtime: "go", Memory: 10241}, "memory 10241 MB is outside 128-10240"},
		{"memory negative", Config{Name: "fn", Runtime: "go", Memory: -1}, "memory -1 MB is outside 128-10240"},
		{"timeout high", Config{Name: "fn", Runtime: "go", Timeout: 901}, "timeout 901 s is outside 1-900"},
		{"timeout negative", Config{Name: "fn", Runtime: "go", Timeout: -3}, "timeout -3 s is outside 1-900"},
		{"tmp low", Config{Name: "fn", Runtime: "go", EphemeralStorage: 511}, "ephemeral_storage 511 MB is outside 512-10240"},
		{"tmp high", Config{Name: "fn", Runtime: "go", EphemeralStorage: 10241}, "ephemeral_storage 10241 MB is outside 512-10240"},
		{"url auth", Config{Name: "fn", Runtime: "go", URLAuth: "iam"}, `url_auth "iam" is not one of none, token`},
		{"network", Config{Name: "fn", Runtime: "go", Network: "host"}, `network "host" is not one of none, outbound`},
		{"env key digit", Config{Name: "fn", Runtime: "go", Env: map[string]string{"1A": ""}}, `env key "1A" must match [A-Za-z][A-Za-z0-9_]*`},
		{"env key dash", Config{Name: "fn", Runtime: "go", Env: map[string]string{"A-B": ""}}, `env key "A-B" must match [A-Za-z][A-Za-z0-9_]*`},
		{"env key reserved", Config{Name: "fn", Runtime: "go", Env: map[string]string{"AWS_LAMBDA_RUNTIME_API": "x"}}, `env key "AWS_LAMBDA_RUNTIME_API" is reserved by the platform`},
		{"env key handler", Config{Name: "fn", Runtime: "go", Env: map[string]string{"_HANDLER": "x"}}, `env key "_HANDLER" must match [A-Za-z][A-Za-z0-9_]*`},
		{"env key task root", Config{Name: "fn", Runtime: "go", Env: map[string]string{"LAMBDA_TASK_ROOT": "x"}}, `env key "LAMBDA_TASK_ROOT" is reserved by the platform`},
		{"env value with NUL", Config{Name: "fn", Runtime: "go", Env: map[string]string{"K": "a\x00b"}}, `env K holds a NUL byte, which no process environment can carry`},
		{"handler with NUL", Config{Name: "fn", Runtime: "node", Handler: "a\x00.b"}, `handler "a\x00.b" must be at most 128 characters, without spaces or control characters`},
		{"handler with space", Config{Name: "fn", Runtime: "python", Handler: "main.my handler"}, `handler "main.my handler" must be at most 128 characters, without spaces or control characters`},
		{"handler too long", Config{Name: "fn", Runtime: "go", Handler: strings.Repeat("h", 129)}, `handler "` + strings.Repeat("h", 129) + `" must be at most 128 characters, without spaces or control characters`},
		{"env too big", Config{Name: "fn", Runtime: "go", Env: map[string]string{"K": strings.Repeat("v", 4096)}}, "env variables take 4097 bytes, more than the 4096 allowed"},
		{"reserved negative", Config{Name: "fn", Runtime: "go", ReservedConcurrency: &neg}, "reserved_concurrency -1 is outside 0-1000"},
		{"reserved high", Config{Name: "fn", Runtime: "go", ReservedConcurrency: &over}, "reserved_concurrency 1001 is outside 0-1000"},
		{"provisioned negative", Config{Name: "fn", Runtime: "go", ProvisionedConcurrency: -1}, "provisioned_concurrency -1 is outside 0-1000"},
		{"provisioned high", Config{Name: "fn", Runtime: "go", ProvisionedConcurrency: 1001}, "provisioned_concurrency 1001 is outside 0-1000"},
		{"provisioned over reserved", Config{Name: "fn", Runtime: "go", ReservedConcurrency: &two, ProvisionedConcurrency: 3}, "provisioned_concurrency 3 is more than reserved_concurrency 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.Normalize()
			if err == nil {
				t.Fatalf("got no error, want %q", tt.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if got, want := err.Error(), "invalid parameter: "+tt.wantErr; got != want {
				t.Errorf("error=%q, want %q", got, want)
			}
		})
	}
}

// TestNormalizeDoesNotAlias checks that normalising copies what the caller
// passed by pointer or slice, so editing the result leaves the input alone.
func TestNormalizeDoesNotAlias(t *testing.T) {
	retries := 1
	in := Config{Name: "fn", Runtime: RuntimeGo, MaximumRetryAttempts: &retries,
		OnFailure: &Destination{Function: "dlq"},
		Triggers:  []Trigger{{Type: TriggerSchedule, Expression: "rate(1 minute)"}}}
	got, err := in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	*got.MaximumRetryAttempts = 0
	got.OnFailure.Function = "other"
	got.Triggers[0].Expression = "rate(2 minutes)"
	if retries != 1 || in.OnFailure.Function != "dlq" || in.Triggers[0].Expression != "rate(1 minute)" {
		t.Errorf("input changed through the result: retries=%d on_failure=%q trigger=%q",
			retries, in.OnFailure.Function, in.Triggers[0].Expression)
	}
}

func TestNormalizeIdempotent(t *testing.T) {
	first, err := Config{Name: "fn", Runtime: RuntimeNode, Env: map[string]string{"A": "b"}}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	second, err := first.Normalize()
	if err != nil {
		t.Fatalf("normalising a normalised config: %v", err)
	}
	if second.Handler != first.Handler || second.Memory != first.Memory || *second.MaximumRetryAttempts != *first.MaximumRetryAttempts ||
		second.MaximumEventAge != first.MaximumEventAge || second.URLAuth != first.URLAuth {
		t.Errorf("second normalisation changed %+v into %+v", first, second)
	}
}

func TestValidSubject(t *testing.T) {
	tests := []struct {
		subject   string
		wildcards bool
		want      bool
	}{
		{"a", false, true},
		{"orders.created", false, true},
		{"", false, false},
		{"a..b", false, false},
		{".a", false, false},
		{"a.", false, false},
		{"a b", false, false},
		{"a.*", false, false},
		{"a.*", true, true},
		{"a.>", true, true},
		{">", true, true},
		{"a.>.b", true, false},
		{"a*.b", true, false},
		{"a.>x", true, false},
	}
	for _, tt := range tests {
		if got := ValidSubject(tt.subject, tt.wildcards); got != tt.want {
			t.Errorf("ValidSubject(%q, %v)=%v, want %v", tt.subject, tt.wildcards, got, tt.want)
		}
	}
}

func TestHelpers(t *testing.T) {
	if got, want := ARN("eu-west-1", "123", "fn"), "arn:aws:lambda:eu-west-1:123:function:fn"; got != want {
		t.Errorf("ARN=%q, want %q", got, want)
	}
	c := Config{Env: map[string]string{"B": "", "A": "", "C": ""}}
	if got := strings.Join(c.EnvKeys(), ","); got != "A,B,C" {
		t.Errorf("EnvKeys=%s, want A,B,C", got)
	}
	if got := (Config{}).EventAge().Seconds(); got != 21600 {
		t.Errorf("default EventAge=%vs, want 21600s", got)
	}
	if got := (Config{MaximumEventAge: 60}).EventAge().Seconds(); got != 60 {
		t.Errorf("EventAge=%vs, want 60s", got)
	}
	if got := (Config{}).RetryAttempts(); got != 2 {
		t.Errorf("default RetryAttempts=%d, want 2", got)
	}
	// 1536 MB for 1.5 s is 2.25 GB-s.
	if got := GBSeconds(1500, 1536); got != 2.25 {
		t.Errorf("GBSeconds(1500, 1536)=%v, want 2.25", got)
	}
	var thr error = &ThrottledError{Reason: "X"}
	if !errors.Is(thr, ErrTooManyRequests) || thr.Error() != "Rate Exceeded." {
		t.Errorf("ThrottledError: Is(ErrTooManyRequests)=%v Error()=%q", errors.Is(thr, ErrTooManyRequests), thr.Error())
	}
}
