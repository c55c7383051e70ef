package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/spf13/cobra"
)

// Environment variables the command line reads itself (the config file's
// STRATA_<KEY> overrides are config.ApplyEnv's).
const (
	envConfig = "STRATA_CONFIG"
	envToken  = "STRATA_TOKEN"
)

// defaultConfigFile is used when neither --config nor STRATA_CONFIG is set.
const defaultConfigFile = "strata.yaml"

// app is one invocation of the command line with its standard streams and
// environment, so tests run commands in process without touching globals.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	// setProcs sets the process's GOMAXPROCS and returns the previous
	// value (runtime.GOMAXPROCS); nil leaves it alone (tests, which run
	// nodes in their own process).
	setProcs func(int) int
}

// run executes the command line and returns the process exit code: 0, 1
// for an error, or the code of an exitError. Every error is printed once
// to stderr as "error: <message>"; API errors read
// "error: <message> (<code>)".
func (a *app) run(args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintf(a.stderr, "error: %v\n", errorMessage(err))
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", ue.cmd)
		}
		var xe exitError
		if errors.As(err, &xe) {
			return xe.code
		}
		return 1
	}
	return 0
}

// exitError ends the command line with an exit code other than 1 (see
// ctl call); its message is printed like any error's.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "strata",
		Short:         "Strata remote device management node",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	group(root)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{err: err, cmd: c.CommandPath()}
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(a.versionCmd(), a.initCmd(), a.serveCmd(), a.ctlCmd(), a.tokenCmd(), a.storeCmd())
	root.AddCommand(a.joinCmd(), a.leaveCmd(), a.demoCmd(), a.clusterCmd(), a.completionCmd(root))
	root.AddCommand(a.backupCmd(), a.restoreCmd())
	// Unknown subcommands and wrong argument counts are usage errors too.
	var wrap func(c *cobra.Command)
	wrap = func(c *cobra.Command) {
		if c.Args != nil {
			args := c.Args
			c.Args = func(c *cobra.Command, a []string) error {
				if err := args(c, a); err != nil {
					return usageError{err: err, cmd: c.CommandPath()}
				}
				return nil
			}
		}
		for _, s := range c.Commands() {
			wrap(s)
		}
	}
	wrap(root)
	return root
}

// group makes c a command that only holds subcommands: alone it prints
// its help, with an unknown subcommand it fails with a usage error.
func group(c *cobra.Command) *cobra.Command {
	c.Args = cobra.NoArgs
	c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return c
}

// usageError is a mistake on the command line; run adds a hint to --help.
type usageError struct {
	err error
	cmd string
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// configPath resolves the config file of a command acting on a node: the
// --config flag, else $STRATA_CONFIG, else ./strata.yaml. explicit reports
// whether the user named the file (flag or environment).
func (a *app) configPath(flag string) (path string, explicit bool) {
	if flag != "" {
		return flag, true
	}
	if v, ok := a.lookupEnv(envConfig); ok && v != "" {
		return v, true
	}
	return defaultConfigFile, false
}

// addConfigFlag adds --config to a command acting on a node.
func addConfigFlag(c *cobra.Command, p *string) {
	c.Flags().StringVarP(p, "config", "c", "", "config file (default $"+envConfig+", else ./"+defaultConfigFile+")")
}

// errorMessage words an error for the terminal. API errors already read
// "<message> (<code>)"; a failed connection names the server, not the
// request.
func errorMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr == nil {
			return fmt.Sprintf("cannot reach %s://%s: %v", u.Scheme, u.Host, ue.Err)
		}
	}
	return err.Error()
}

// completionCmd writes the completion script of a shell.
func (a *app) completionCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print the shell completion script for bash, zsh or fish",
		Long: `Completion prints a script that completes strata's commands and flags:

  bash:  source <(strata completion bash)     # or save it in /etc/bash_completion.d/strata
  zsh:   strata completion zsh > "${fpath[1]}/_strata"
  fish:  strata completion fish > ~/.config/fish/completions/strata.fish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish"},
		RunE: func(c *cobra.Command, args []string) error {
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.stdout, true)
			case "zsh":
				return root.GenZshCompletion(a.stdout)
			case "fish":
				return root.GenFishCompletion(a.stdout, true)
			}
			return usageError{err: fmt.Errorf("shell %q: want bash, zsh or fish", args[0]), cmd: c.CommandPath()}
		},
	}
}
