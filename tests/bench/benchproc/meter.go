package benchproc

import "time"

// Usage is a process's wall time, CPU time and resident memory over a
// phase, as a child answers "end".
type Usage struct {
	Wall time.Duration `json:"wall"`
	CPU  time.Duration `json:"cpu"`
	RSS  float64       `json:"rss_mb"`
}

// Cores is the CPU time over the wall time.
func (u Usage) Cores() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.CPU.Seconds() / u.Wall.Seconds()
}

// PhaseMeter is a child's side of the "begin" and "end" commands (its
// CPU time between them) and of "profile-start FILE" and "profile-stop".
type PhaseMeter struct {
	t0   time.Time
	cpu0 time.Duration
	prof Profiler
}

// Handle answers cmd when it is one of the meter's; handled is false for
// any other command.
func (m *PhaseMeter) Handle(cmd string, args []string) (v any, handled bool, err error) {
	switch cmd {
	case "begin":
		m.t0, m.cpu0 = time.Now(), CPUTime()
		return struct{}{}, true, nil
	case "end":
		return Usage{Wall: time.Since(m.t0), CPU: CPUTime() - m.cpu0, RSS: StatusMB("VmRSS")}, true, nil
	case "profile-start":
		return struct{}{}, true, m.prof.Start(args)
	case "profile-stop":
		m.prof.Stop()
		return struct{}{}, true, nil
	}
	return nil, false, nil
}

// Stop ends a profile still running.
func (m *PhaseMeter) Stop() { m.prof.Stop() }
