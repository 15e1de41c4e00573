// Package cli is the aloft command tree. Its commands talk to an Aloft
// server over HTTP only (docs/api.md), through Client; they return errors
// and leave printing them, and exiting, to main (see PrintError).
package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// DefaultURL is the server the CLI talks to when ALOFT_URL is not set.
const DefaultURL = "http://127.0.0.1:8080"

// TokenFile is where `aloft up` keeps its admin token, relative to the
// folder it was started in (its default data dir is ./.aloft).
var TokenFile = filepath.Join(".aloft", "token")

// ErrFunctionFailed is returned by `aloft invoke` when the function itself
// failed. The command has already printed the function's error, so
// PrintError prints nothing more for it.
var ErrFunctionFailed = errors.New("the function failed")

// NewRoot returns the aloft command tree; extra commands (such as `up`,
// which runs the server and lives with main) are added to it. Errors are
// neither printed nor followed by usage: main passes them to PrintError.
func NewRoot(version string, extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "aloft",
		Short: "Aloft runs Lambda-compatible functions on your own machines",
		Long: "Aloft runs Lambda-compatible functions on your own machines.\n\n" +
			"Commands other than init and up talk to the server at $ALOFT_URL\n" +
			"(default " + DefaultURL + ") with the token in $ALOFT_TOKEN, else in\n" +
			"./" + filepath.ToSlash(TokenFile) + ".",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newInitCmd(),
		newDeployCmd(),
		newInvokeCmd(),
		newLsCmd(),
		newRmCmd(),
		newLogsCmd(),
		newUsageCmd(),
		newStatusCmd(),
		newDLQCmd(),
	)
	root.AddCommand(extra...)
	return root
}

// PrintError writes err as the one line "aloft: <err>" to w, or nothing
// when the command already reported it (ErrFunctionFailed). main calls it
// with os.Stderr before exiting with status 1.
func PrintError(w io.Writer, err error) {
	if err == nil || errors.Is(err, ErrFunctionFailed) {
		return
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	fmt.Fprintf(w, "aloft: %s\n", msg)
}

// clientFromEnv returns a Client for $ALOFT_URL (default DefaultURL) with
// the token of $ALOFT_TOKEN, else of ./.aloft/token when that file exists.
func clientFromEnv() (*Client, error) {
	base := os.Getenv("ALOFT_URL")
	if base == "" {
		base = DefaultURL
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	token := os.Getenv("ALOFT_TOKEN")
	if token == "" {
		data, err := os.ReadFile(TokenFile)
		switch {
		case err == nil:
			token = strings.TrimSpace(string(data))
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("cannot read the token: %w", err)
		}
	}
	return &Client{BaseURL: strings.TrimRight(base, "/"), Token: token}, nil
}
