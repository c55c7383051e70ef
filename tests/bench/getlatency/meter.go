package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// usage is what one process used and waited for over a phase.
type usage struct {
	Wall time.Duration `json:"wall"`
	CPU  time.Duration `json:"cpu"` // user + system CPU of the process
	// SchedP50 and SchedP99 are how long the process's goroutines waited
	// runnable for a CPU (the Go runtime's /sched/latencies histogram
	// over the phase); MutexWait is the time its goroutines spent blocked
	// on sync.Mutex/RWMutex.
	SchedP50  time.Duration `json:"sched_p50"`
	SchedP99  time.Duration `json:"sched_p99"`
	MutexWait time.Duration `json:"mutex_wait"`
	// OSWait is how long the process's threads waited, runnable, for the
	// kernel to give them a CPU (summed over threads, from
	// /proc/self/task/*/schedstat): the part of SchedP99 the Go runtime
	// cannot help, when other processes hold the cores.
	OSWait time.Duration `json:"os_wait"`
	// GCs is the number of garbage collections; GCCPU the CPU they
	// took (the runtime's estimate).
	GCs   uint64        `json:"gcs"`
	GCCPU time.Duration `json:"gc_cpu"`
	Load  string        `json:"load"` // /proc/loadavg at the end
}

// cores is the process's CPU over the phase, in cores.
func (u usage) cores() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.CPU.Seconds() / u.Wall.Seconds()
}

// meter measures one process from begin to end.
type meter struct {
	sched  []uint64
	mutex  float64
	gcs    uint64
	gcCPU  float64
	cpu    time.Duration
	osWait time.Duration
	t0     time.Time
}

var meterSamples = []string{"/sched/latencies:seconds", "/sync/mutex/wait/total:seconds", "/gc/cycles/total:gc-cycles", "/cpu/classes/gc/total:cpu-seconds"}

func readMeter() ([]metrics.Sample, *metrics.Float64Histogram) {
	s := make([]metrics.Sample, len(meterSamples))
	for i, n := range meterSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	return s, s[0].Value.Float64Histogram()
}

func begin() *meter {
	s, h := readMeter()
	return &meter{sched: slices.Clone(h.Counts), mutex: s[1].Value.Float64(), gcs: s[2].Value.Uint64(), gcCPU: s[3].Value.Float64(),
		cpu: cpuTime(), osWait: osRunDelay(), t0: time.Now()}
}

func (m *meter) end() usage {
	u := usage{Wall: time.Since(m.t0), CPU: cpuTime() - m.cpu, OSWait: osRunDelay() - m.osWait, Load: loadAvg()}
	s, h := readMeter()
	diff := make([]uint64, len(h.Counts))
	for i := range diff {
		diff[i] = h.Counts[i] - m.sched[i]
	}
	u.SchedP50, u.SchedP99 = histQ(diff, h.Buckets, 0.5), histQ(diff, h.Buckets, 0.99)
	u.MutexWait = time.Duration((s[1].Value.Float64() - m.mutex) * float64(time.Second))
	u.GCs = s[2].Value.Uint64() - m.gcs
	u.GCCPU = time.Duration((s[3].Value.Float64() - m.gcCPU) * float64(time.Second))
	return u
}

// phase is what the processes of the run used over one measuring phase.
type phase struct {
	node, bench usage
	sim         *usage // nil when no simulator ran
	simNice     int
	simIdle     bool
	acked       float64 // device messages acknowledged per second
}

func (p phase) String() string {
	s := fmt.Sprintf("node CPU %.2f cores of %d, its run-queue wait p50 %s p99 %s, its threads waited for the kernel %.2f s/s, mutex wait %s, %d GCs (%.2f cores); GET clients CPU %.2f cores",
		p.node.cores(), runtime.NumCPU(), p.node.SchedP50, p.node.SchedP99, p.node.OSWait.Seconds()/p.node.Wall.Seconds(), p.node.MutexWait.Round(time.Millisecond),
		p.node.GCs, p.node.GCCPU.Seconds()/p.node.Wall.Seconds(), p.bench.cores())
	if p.sim != nil {
		sched := fmt.Sprintf("nice %d", p.simNice)
		if p.simIdle {
			sched += ", SCHED_IDLE"
		}
		s += fmt.Sprintf("; simulator CPU %.2f cores (%s)", p.sim.cores(), sched)
	}
	return s + "; load average " + p.node.Load
}

// histQ is the upper bound of the bucket holding quantile p.
func histQ(counts []uint64, buckets []float64, p float64) time.Duration {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	want, seen := uint64(p*float64(total)), uint64(0)
	for i, c := range counts {
		seen += c
		if seen > want {
			ub := buckets[i+1]
			if math.IsInf(ub, 1) {
				ub = buckets[i]
			}
			return time.Duration(ub * float64(time.Second)).Round(time.Microsecond)
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// osRunDelay sums the time this process's live threads spent runnable
// waiting for a CPU (the second field of each task's schedstat).
func osRunDelay() time.Duration {
	tasks, _ := os.ReadDir("/proc/self/task")
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				total += time.Duration(ns)
			}
		}
	}
	return total
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }
