// Package benchproc runs a bench's node and device simulator as child
// processes of the bench itself.
package benchproc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"sync"
)

// The bench runs the node and the device simulator as child processes of
// itself (the same executable with -role node or -role sim), the way they
// run in production: the node alone in its process, the devices elsewhere.
// A child talks with the bench over its standard input and output, one
// line per message: the bench writes a command, the child answers with one
// JSON line. Closing the child's standard input stops it. Logs go to
// standard error, shared with the bench.

// Child is a running child process.
type Child struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex
}

// StartChild starts this executable with args, under nice when niceness > 0,
// and in the kernel's idle scheduling class (SCHED_IDLE: it runs only on
// CPU time no other thread wants, and gives way at once) when idle is set.
func StartChild(name string, niceness int, idle bool, env []string, args ...string) (*Child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	argv := append([]string{self}, args...)
	if niceness > 0 {
		// nice(1) sets the niceness before exec, so every thread of the
		// child inherits it (on Linux, setpriority on a running process
		// changes one thread only).
		argv = append([]string{"nice", "-n", fmt.Sprint(niceness)}, argv...)
	}
	if idle {
		// chrt(1) sets the policy before exec; every thread inherits it.
		argv = append([]string{"chrt", "--idle", "0"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &Child{name: name, cmd: cmd, in: in, out: sc}, nil
}

// read decodes the child's next line into v.
func (c *Child) Read(v any) error {
	if !c.out.Scan() {
		err := c.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if err := json.Unmarshal(c.out.Bytes(), v); err != nil {
		return fmt.Errorf("%s: %q: %w", c.name, c.out.Text(), err)
	}
	return nil
}

// call sends one command and decodes its answer into v.
func (c *Child) Call(v any, command ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := fmt.Fprintln(c.in, strings.Join(command, " ")); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	var a answer
	if err := c.Read(&a); err != nil {
		return err
	}
	if a.Err != "" {
		return fmt.Errorf("%s: %s", c.name, a.Err)
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(a.Data, v)
}

// stop closes the child's input and waits for it to exit.
func (c *Child) Stop() error {
	c.in.Close()
	for c.out.Scan() { // drain what it still writes
	}
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

// answer is a child's reply to one command.
type answer struct {
	Data json.RawMessage `json:"data,omitempty"`
	Err  string          `json:"err,omitempty"`
}

// ServeCommands is a child's side: it answers each line of standard input
// with handle's result until the input ends.
func ServeCommands(handle func(cmd string, args []string) (any, error)) {
	sc := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		v, err := handle(f[0], f[1:])
		var a answer
		if err != nil {
			a.Err = err.Error()
		} else if a.Data, err = json.Marshal(v); err != nil {
			a.Err = err.Error()
		}
		if err := enc.Encode(a); err != nil {
			return
		}
	}
}

// Announce writes a child's first line (what the bench waits for before
// its first command).
func Announce(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

// Profiler is a child's CPU profile, which the bench starts and stops by
// command ("profile-start FILE", "profile-stop").
type Profiler struct{ f *os.File }

// Start writes a CPU profile to the one file args names, until Stop.
func (p *Profiler) Start(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("profile-start FILE")
	}
	f, err := os.Create(args[0])
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	p.f = f
	return nil
}

// Stop ends the profile, if one runs.
func (p *Profiler) Stop() {
	if p.f != nil {
		pprof.StopCPUProfile()
		p.f.Close()
		p.f = nil
	}
}
