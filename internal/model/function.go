// Package model holds Aloft's domain types and sentinel errors. It imports
// nothing of Aloft's own, so every other package can depend on it.
package model

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Runtime names a language runtime. Functions deployed with RuntimeGo are
// built by the CLI and stored as RuntimeProvided.
type Runtime string

const (
	RuntimeProvided Runtime = "provided" // the bundle holds an executable "bootstrap"
	RuntimeGo       Runtime = "go"       // built into a bootstrap at deploy time
	RuntimeNode     Runtime = "node"     // handler "file.export", Aloft's Node bootstrap
	RuntimePython   Runtime = "python"   // handler "module.function", Aloft's Python bootstrap
)

// Limits and defaults of the function model; they follow AWS Lambda's.
const (
	DefaultMemoryMB  = 128
	MinMemoryMB      = 128
	MaxMemoryMB      = 10240
	DefaultTimeout   = 3 // seconds
	MinTimeout       = 1
	MaxTimeout       = 900
	DefaultTmpMB     = 512
	MinTmpMB         = 512
	MaxTmpMB         = 10240
	MaxSyncPayload   = 6 * 1024 * 1024 // request and response body of a sync invoke
	MaxEnvBytes      = 4 * 1024        // total size of a function's environment variables
	DefaultVersion   = "$LATEST"
	DefaultRegion    = "us-east-1"
	DefaultAccountID = "000000000000"
)

// URL auth modes of a function URL.
const (
	URLAuthNone  = "none"  // public
	URLAuthToken = "token" // needs the admin bearer token
)

// Network modes of an instance.
const (
	NetworkNone     = "none"     // loopback only (default)
	NetworkOutbound = "outbound" // may reach the outside, never the host's loopback
)

// Config is what a user declares about a function: the keys of aloft.yaml and
// the body of the /v1 deploy call. Zero values mean "use the default".
type Config struct {
	Name    string            `json:"name" yaml:"name"`
	Runtime Runtime           `json:"runtime" yaml:"runtime"`
	Handler string            `json:"handler,omitempty" yaml:"handler"`
	Memory  int               `json:"memory,omitempty" yaml:"memory"`   // MB
	Timeout int               `json:"timeout,omitempty" yaml:"timeout"` // seconds
	Env     map[string]string `json:"env,omitempty" yaml:"env"`
	URLAuth string            `json:"url_auth,omitempty" yaml:"url_auth"`
	// EphemeralStorage is the size limit of the instance's /tmp, in MB.
	EphemeralStorage int    `json:"ephemeral_storage,omitempty" yaml:"ephemeral_storage"`
	Network          string `json:"network,omitempty" yaml:"network"`

	// Concurrency, as Lambda's. ReservedConcurrency caps the function's
	// instances and holds their memory back for it; nil means no
	// reservation, 0 disables the function. ProvisionedConcurrency instances
	// are kept initialised at all times.
	ReservedConcurrency    *int `json:"reserved_concurrency,omitempty" yaml:"reserved_concurrency"`
	ProvisionedConcurrency int  `json:"provisioned_concurrency,omitempty" yaml:"provisioned_concurrency"`

	// Asynchronous invocation, as Lambda's PutFunctionEventInvokeConfig.
	// MaximumRetryAttempts is a pointer because 0 (no retries) differs
	// from unset (DefaultRetryAttempts); Normalize always sets it.
	MaximumRetryAttempts *int `json:"maximum_retry_attempts,omitempty" yaml:"maximum_retry_attempts"`
	// MaximumEventAge is in seconds (DefaultEventAge).
	MaximumEventAge int          `json:"maximum_event_age,omitempty" yaml:"maximum_event_age"`
	OnSuccess       *Destination `json:"on_success,omitempty" yaml:"on_success"`
	OnFailure       *Destination `json:"on_failure,omitempty" yaml:"on_failure"`
	Triggers        []Trigger    `json:"triggers,omitempty" yaml:"triggers"`
}

// Function is a deployed function: its config with defaults applied, plus
// what the platform records about its code.
type Function struct {
	Config
	CodeSHA256   string    `json:"code_sha256"`
	CodeSize     int64     `json:"code_size"`
	Version      string    `json:"version"`
	LastModified time.Time `json:"last_modified"`
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
)

// reservedEnv are variables the platform sets; a function may not override them.
var reservedEnv = map[string]bool{
	"AWS_LAMBDA_RUNTIME_API": true, "AWS_LAMBDA_FUNCTION_NAME": true,
	"AWS_LAMBDA_FUNCTION_VERSION": true, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": true,
	"AWS_LAMBDA_LOG_GROUP_NAME": true, "AWS_LAMBDA_LOG_STREAM_NAME": true,
	"_HANDLER": true, "LAMBDA_TASK_ROOT": true, "LAMBDA_RUNTIME_DIR": true,
}

// ValidName reports whether name is a valid function name.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Normalize applies defaults and validates c. It returns an error wrapping
// ErrInvalid that names the first offending field.
func (c Config) Normalize() (Config, error) {
	if !ValidName(c.Name) {
		return c, invalidf("name %q must match [A-Za-z0-9_-]{1,64}", c.Name)
	}
	switch c.Runtime {
	case RuntimeProvided, RuntimeGo:
		if c.Handler == "" {
			c.Handler = "bootstrap"
		}
	case RuntimeNode:
		if c.Handler == "" {
			c.Handler = "index.handler"
		}
		if err := checkHandler(c.Handler, "file.export"); err != nil {
			return c, err
		}
	case RuntimePython:
		if c.Handler == "" {
			c.Handler = "main.handler"
		}
		if err := checkHandler(c.Handler, "module.function"); err != nil {
			return c, err
		}
	case "":
		return c, invalidf("runtime is required (provided, go, node or python)")
	default:
		return c, invalidf("runtime %q is not one of provided, go, node, python", c.Runtime)
	}
	// As Lambda's Handler: no whitespace, at most 128 characters; and no
	// NUL, which no process environment can carry (_HANDLER).
	if len(c.Handler) > 128 || strings.ContainsAny(c.Handler, "\x00 \t\n\v\f\r") {
		return c, invalidf("handler %q must be at most 128 characters, without spaces or control characters", c.Handler)
	}
	if c.Memory == 0 {
		c.Memory = DefaultMemoryMB
	}
	if c.Memory < MinMemoryMB || c.Memory > MaxMemoryMB {
		return c, invalidf("memory %d MB is outside %d-%d", c.Memory, MinMemoryMB, MaxMemoryMB)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < MinTimeout || c.Timeout > MaxTimeout {
		return c, invalidf("timeout %d s is outside %d-%d", c.Timeout, MinTimeout, MaxTimeout)
	}
	if c.EphemeralStorage == 0 {
		c.EphemeralStorage = DefaultTmpMB
	}
	if c.EphemeralStorage < MinTmpMB || c.EphemeralStorage > MaxTmpMB {
		return c, invalidf("ephemeral_storage %d MB is outside %d-%d", c.EphemeralStorage, MinTmpMB, MaxTmpMB)
	}
	switch c.URLAuth {
	case "":
		c.URLAuth = URLAuthNone
	case URLAuthNone, URLAuthToken:
	default:
		return c, invalidf("url_auth %q is not one of none, token", c.URLAuth)
	}
	switch c.Network {
	case "":
		c.Network = NetworkNone
	case NetworkNone, NetworkOutbound:
	default:
		return c, invalidf("network %q is not one of none, outbound", c.Network)
	}
	size := 0
	for k, v := range c.Env {
		if !envKeyRE.MatchString(k) {
			return c, invalidf("env key %q must match [A-Za-z][A-Za-z0-9_]*", k)
		}
		if reservedEnv[k] {
			return c, invalidf("env key %q is reserved by the platform", k)
		}
		if strings.ContainsRune(v, 0) {
			return c, invalidf("env %s holds a NUL byte, which no process environment can carry", k)
		}
		size += len(k) + len(v)
	}
	if size > MaxEnvBytes {
		return c, invalidf("env variables take %d bytes, more than the %d allowed", size, MaxEnvBytes)
	}
	if err := c.checkConcurrency(); err != nil {
		return c, err
	}
	return c.normalizeAsync()
}

func checkHandler(h, shape string) error {
	for i := len(h) - 1; i >= 0; i-- {
		if h[i] == '.' {
			if i == 0 || i == len(h)-1 {
				break
			}
			return nil
		}
	}
	return invalidf("handler %q must have the form %s", h, shape)
}

// EnvKeys returns the function's environment variable names, sorted.
func (c Config) EnvKeys() []string {
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ARN returns the function's ARN in Lambda's shape.
func ARN(region, account, name string) string {
	return fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", region, account, name)
}

// MaxConcurrency bounds reserved and provisioned concurrency per function.
const MaxConcurrency = 1000

func (c Config) checkConcurrency() error {
	if r := c.ReservedConcurrency; r != nil && (*r < 0 || *r > MaxConcurrency) {
		return invalidf("reserved_concurrency %d is outside 0-%d", *r, MaxConcurrency)
	}
	p := c.ProvisionedConcurrency
	if p < 0 || p > MaxConcurrency {
		return invalidf("provisioned_concurrency %d is outside 0-%d", p, MaxConcurrency)
	}
	if r := c.ReservedConcurrency; r != nil && p > *r {
		return invalidf("provisioned_concurrency %d is more than reserved_concurrency %d", p, *r)
	}
	return nil
}

// Reserved returns the reserved concurrency, or -1 when there is none.
func (c Config) Reserved() int {
	if c.ReservedConcurrency == nil {
		return -1
	}
	return *c.ReservedConcurrency
}
