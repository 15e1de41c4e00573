package node

import (
	"fmt"
	"log/slog"

	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/sandbox/plain"
)

// chooseDriver picks the sandbox driver the isolation setting asks for.
func chooseDriver(cfg Config, log *slog.Logger) (sandbox.Driver, error) {
	switch cfg.Isolation {
	case "", "auto", "required":
		d, err := newIsolatingDriver(cfg)
		if err == nil {
			return d, nil
		}
		if cfg.Isolation == "required" {
			return nil, fmt.Errorf("cannot isolate function instances (--isolation=required): %w", err)
		}
		p := &plain.Driver{}
		log.Warn("function instances are NOT isolated: "+err.Error()+"; running plain processes",
			"missing", p.Isolation().Missing)
		return p, nil
	case "none":
		return &plain.Driver{}, nil
	default:
		return nil, fmt.Errorf("isolation %q is not one of auto, required, none", cfg.Isolation)
	}
}
