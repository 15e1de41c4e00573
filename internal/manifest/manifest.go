// Package manifest reads a function's aloft.yaml into a model.Config.
//
// The file holds the config keys of docs/api.md (name, runtime, handler,
// memory, timeout, env, url_auth, ephemeral_storage, network,
// maximum_retry_attempts, maximum_event_age, on_success, on_failure,
// triggers). Unknown keys and badly typed values are errors that name their
// line. Parsing does not apply defaults or validate values:
// model.Config.Normalize does that.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/aloft-dev/aloft/internal/model"
)

// FileName is the manifest's name inside a function folder.
const FileName = "aloft.yaml"

// knownKeys lists the keys of model.Config, for the unknown-key message.
const knownKeys = "name, runtime, handler, memory, timeout, env, url_auth, ephemeral_storage, network, " +
	"maximum_retry_attempts, maximum_event_age, on_success, on_failure, triggers"

// Load reads and parses dir/aloft.yaml. A missing file yields an error that
// wraps fs.ErrNotExist, so callers can treat it as "no manifest".
func Load(dir string) (model.Config, error) {
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		return model.Config{}, fmt.Errorf("cannot read manifest: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return model.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes one YAML document into a Config. An empty document (or one
// holding only comments) declares nothing and yields the zero Config.
func Parse(data []byte) (model.Config, error) {
	var cfg model.Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return model.Config{}, nil
		}
		return model.Config{}, oneLine(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return model.Config{}, oneLine(err)
		}
		return model.Config{}, fmt.Errorf("line %d: only one YAML document is allowed", extra.Line)
	}
	return cfg, nil
}

var unknownFieldRE = regexp.MustCompile(`^line (\d+): field (.+) not found in type \S+$`)

// oneLine turns yaml.v3's (sometimes multi-line) errors into one line such
// as `line 3: unknown key "memroy" (known: ...)`.
func oneLine(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, m := range te.Errors {
			if g := unknownFieldRE.FindStringSubmatch(m); g != nil {
				m = fmt.Sprintf("line %s: unknown key %q (known: %s)", g[1], g[2], knownKeys)
			}
			msgs = append(msgs, m)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}
