package window

import (
	"time"

	"veil/proto"
)

// Realistic circuits: 2 MB/s each (five make 10 MB/s), 100 ms round
// trips with up to 20 % jitter per message, a second to build a
// replacement.
const (
	simRate = 2e6
	simRTT  = 100 * time.Millisecond
)

var simBase = simCirc{Rate: simRate, RTT: simRTT, Jitter: 0.2}

func simWindowConfig() Config {
	return DefaultConfig(proto.HashName{0xab, 0xcd})
}

// scenario returns a named setup for a content of size bytes, and the
// capacity efficiency is measured against: the sum of the rates of the
// five best circuits the run could use.
func scenario(name string, size, seed uint64) (simConfig, float64) {
	cfg := simConfig{
		Seed: seed, Size: size, Window: simWindowConfig(),
		Replacement: simBase, BuildDelay: time.Second,
	}
	five := func() []simCirc { return []simCirc{simBase, simBase, simBase, simBase, simBase} }
	capacity := 5 * simRate
	expected := time.Duration(float64(size) / capacity * float64(time.Second))
	switch name {
	case "equal":
		cfg.Circuits = five()
	case "oneslow":
		cfg.Circuits = five()
		cfg.Circuits[2].Rate = simRate / 10
	case "onedies":
		cfg.Circuits = five()
		cfg.Circuits[1].FailAt = expected / 2
	case "rtt10x":
		cfg.Circuits = five()
		for i, rtt := range []time.Duration{20, 50, 90, 140, 200} {
			cfg.Circuits[i].RTT = rtt * time.Millisecond
		}
	case "stall":
		cfg.Circuits = five()
		cfg.Circuits[3].StallAt = expected * 3 / 10
	case "pauses":
		// Paths as on one machine (8 MB/s each, 4 ms round trips), and the
		// requester's own side takes nothing in for 250 ms (more than
		// StallMin) three times: every circuit falls silent at once, which
		// says nothing of the circuits. Capacity: 40 MB/s, pauses
		// included (the paths keep sending into them what was asked).
		cfg.Circuits = five()
		for i := range cfg.Circuits {
			cfg.Circuits[i].Rate, cfg.Circuits[i].RTT = 8e6, 4*time.Millisecond
		}
		cfg.Replacement = cfg.Circuits[0]
		const pause = 250 * time.Millisecond
		at := time.Duration(float64(size) / 40e6 * float64(time.Second))
		for _, f := range []time.Duration{2, 5, 8} {
			cfg.Pauses = append(cfg.Pauses, simPause{At: at * f / 10, For: pause})
		}
		capacity = 40e6
	case "hiccups":
		// Paths as on one loaded machine (8 MB/s each, 4 ms round trips);
		// each path in turn sends nothing for 150 ms (less than StallMin)
		// every second, the others meanwhile going on.
		cfg.Circuits = five()
		for i := range cfg.Circuits {
			c := &cfg.Circuits[i]
			c.Rate, c.RTT = 8e6, 4*time.Millisecond
			c.HiccupEvery, c.HiccupFor = time.Second+time.Duration(i)*193*time.Millisecond, 150*time.Millisecond
		}
		cfg.Replacement = cfg.Circuits[0]
		capacity = 40e6
	case "busyhost":
		// Paths as on one loaded machine (8 MB/s each, 4 ms round trips),
		// every query up to 40 ms late on its way to the ORDB.
		cfg.Circuits = five()
		for i := range cfg.Circuits {
			c := &cfg.Circuits[i]
			c.Rate, c.RTT, c.QueryDelay = 8e6, 4*time.Millisecond, 40*time.Millisecond
		}
		cfg.Replacement = cfg.Circuits[0]
		capacity = 40e6
	// More setups, for BenchmarkWindowSimMore.
	case "jitter50":
		cfg.Circuits = five()
		for i := range cfg.Circuits {
			cfg.Circuits[i].Jitter = 0.5
		}
	case "uneven":
		cfg.Circuits = five()
		hetero(&cfg, 0.2)
		capacity = 24e6 // 10, 6, 4, 2 and the 2 MB/s replacement of the 1 MB/s
	case "msg8":
		cfg.Circuits = five()
		cfg.MsgChunks = 8
	case "slowpaths":
		cfg.Circuits = five()
		for i := range cfg.Circuits {
			cfg.Circuits[i].Rate, cfg.Circuits[i].RTT = 1e6, 300*time.Millisecond
		}
		cfg.Replacement.Rate = 1e6
		capacity = 5e6
	case "fast":
		cfg.Circuits = five()
		for i := range cfg.Circuits {
			cfg.Circuits[i].Rate = 10e6
		}
		capacity = 50e6
	case "third":
		cfg.Circuits = five()
		cfg.Circuits[2].Rate = simRate / 3
	case "twodie":
		cfg.Circuits = five()
		cfg.Circuits[1].FailAt = expected * 3 / 10
		cfg.Circuits[3].FailAt = expected / 2
	case "degrades":
		cfg.Circuits = five()
		cfg.Circuits[2].SlowAt, cfg.Circuits[2].SlowBy = expected*3/10, 10
	default:
		panic("unknown scenario " + name)
	}
	return cfg, capacity
}

var (
	scenarioNames = []string{"equal", "oneslow", "onedies", "rtt10x", "stall"}
	moreScenarios = []string{"pauses", "hiccups", "busyhost", "jitter50", "uneven", "msg8", "slowpaths", "fast", "third", "twodie", "degrades"}
)
