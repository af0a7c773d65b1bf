package main

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

// scale sizes every scenario. -scale picks one of scales; a flag of the
// same name overrides one field.
type scale struct {
	IngestRound   time.Duration // one closed-loop round of each server
	IngestRounds  int           // rounds, alternating empty handler and ingest
	IngestClients int           // concurrent clients of a closed-loop round
	IngestRate    float64       // webhooks/s of the fixed-rate latency run
	IngestRateFor time.Duration // its length

	LightRate, HeavyRate float64       // push-to-launch: webhooks/s
	LightFor, HeavyFor   time.Duration // and for how long
	AWSHeavyRate         float64       // the heavy load on moto
	KubeAPIRate          float64       // the heavy load on a real API server (DESIGN.md: 20)

	DispatchN, DispatchKeys       int // queued requests and lock keys, embedded
	DispatchRounds                int // embedded dispatcher drains, each between two bare ones
	AWSDispatchN, AWSDispatchKeys int // on moto, which is slower

	ReapN    int     // build Pods that end
	ReapRate float64 // Pods ending per second

	WebhookN int // record changes delivered to an outgoing webhook

	EndN int // trivial local builds timed from push to final record

	MemN    int           // webhooks queued while the dispatcher is paused
	MemKeys int           // over this many lock keys
	MemRun  time.Duration // how long the dispatcher then works the deep queue
	Idle    time.Duration // window over which idle calls are counted

	AbuseUploads   int           // unsigned 5 MiB uploads held at once
	AbuseFollowers int           // log follows asked for at once
	AbuseFor       time.Duration // how long signed webhooks are sent, idle and during the abuse

	BenchTime string // go test -benchtime of the micro-benchmarks
}

var scales = map[string]scale{
	"full": {
		IngestRound: 5 * time.Second, IngestRounds: 3, IngestClients: 16, IngestRate: 100, IngestRateFor: 10 * time.Second,
		LightRate: 5, LightFor: 30 * time.Second, HeavyRate: 50, HeavyFor: 10 * time.Second, AWSHeavyRate: 20, KubeAPIRate: 20,
		DispatchN: 10000, DispatchKeys: 1000, DispatchRounds: 3, AWSDispatchN: 500, AWSDispatchKeys: 50,
		ReapN: 300, ReapRate: 30, WebhookN: 300, EndN: 40,
		MemN: 10000, MemKeys: 1000, MemRun: 30 * time.Second, Idle: 60 * time.Second,
		AbuseUploads: 100, AbuseFollowers: 500, AbuseFor: 30 * time.Second,
		BenchTime: "1s",
	},
	"quick": {
		IngestRound: time.Second, IngestRounds: 2, IngestClients: 8, IngestRate: 50, IngestRateFor: 2 * time.Second,
		LightRate: 5, LightFor: 4 * time.Second, HeavyRate: 20, HeavyFor: 2 * time.Second, AWSHeavyRate: 10, KubeAPIRate: 20,
		DispatchN: 500, DispatchKeys: 50, DispatchRounds: 1, AWSDispatchN: 100, AWSDispatchKeys: 20,
		ReapN: 40, ReapRate: 20, WebhookN: 40, EndN: 10,
		MemN: 300, MemKeys: 30, MemRun: 5 * time.Second, Idle: 5 * time.Second,
		AbuseUploads: 100, AbuseFollowers: 500, AbuseFor: 5 * time.Second,
		BenchTime: "100ms",
	},
}

type field struct {
	name, usage string
	p           any // *time.Duration, *int, *float64 or *string
}

func (s *scale) fields() []field {
	return []field{
		{"ingest-round", "length of one closed-loop ingest round", &s.IngestRound},
		{"ingest-rounds", "closed-loop rounds of each server, alternating", &s.IngestRounds},
		{"ingest-clients", "concurrent clients of a closed-loop round", &s.IngestClients},
		{"ingest-rate", "webhooks/s of the fixed-rate ingest latency run", &s.IngestRate},
		{"ingest-rate-for", "length of the fixed-rate ingest latency run", &s.IngestRateFor},
		{"light-rate", "push-to-launch light load, webhooks/s", &s.LightRate},
		{"light-for", "push-to-launch light load, length", &s.LightFor},
		{"heavy-rate", "push-to-launch heavy load, webhooks/s", &s.HeavyRate},
		{"heavy-for", "push-to-launch heavy load, length", &s.HeavyFor},
		{"aws-heavy-rate", "push-to-launch heavy load on moto, webhooks/s", &s.AWSHeavyRate},
		{"kubeapi-rate", "push-to-launch heavy load on a real API server, webhooks/s", &s.KubeAPIRate},
		{"dispatch-n", "queued requests of the embedded dispatcher run", &s.DispatchN},
		{"dispatch-keys", "lock keys of the embedded dispatcher run", &s.DispatchKeys},
		{"dispatch-rounds", "embedded dispatcher drains, each between two bare drains (the figure: the median round)", &s.DispatchRounds},
		{"aws-dispatch-n", "queued requests of the dispatcher run on moto", &s.AWSDispatchN},
		{"aws-dispatch-keys", "lock keys of the dispatcher run on moto", &s.AWSDispatchKeys},
		{"reap-n", "build Pods that end in the reaper run", &s.ReapN},
		{"reap-rate", "Pods ending per second in the reaper run", &s.ReapRate},
		{"webhook-n", "record changes timed to an outgoing webhook", &s.WebhookN},
		{"end-n", "trivial local builds timed from push to final record", &s.EndN},
		{"mem-n", "webhooks queued for the memory run", &s.MemN},
		{"mem-keys", "lock keys of the memory run", &s.MemKeys},
		{"mem-run", "how long the dispatcher works the deep queue in the memory run", &s.MemRun},
		{"idle", "window over which an idle dispatcher's calls are counted", &s.Idle},
		{"abuse-uploads", "unsigned 5 MiB uploads held at once in the abuse run", &s.AbuseUploads},
		{"abuse-followers", "log follows asked for at once in the abuse run", &s.AbuseFollowers},
		{"abuse-for", "how long signed webhooks are sent in the abuse run, idle and during the abuse", &s.AbuseFor},
		{"benchtime", "go test -benchtime of the micro-benchmarks", &s.BenchTime},
	}
}

// flags registers one flag per field of s.
func (s *scale) flags(fs *flag.FlagSet) {
	for _, f := range s.fields() {
		switch p := f.p.(type) {
		case *time.Duration:
			fs.DurationVar(p, f.name, 0, f.usage+" (overrides -scale)")
		case *int:
			fs.IntVar(p, f.name, 0, f.usage+" (overrides -scale)")
		case *float64:
			fs.Float64Var(p, f.name, 0, f.usage+" (overrides -scale)")
		case *string:
			fs.StringVar(p, f.name, "", f.usage+" (overrides -scale)")
		}
	}
}

// over returns base with the fields whose flags were set taken from s.
func (s scale) over(base scale, fs *flag.FlagSet) scale {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	out := base
	src := s.fields()
	for i, f := range out.fields() {
		if !set[f.name] {
			continue
		}
		switch p := f.p.(type) {
		case *time.Duration:
			*p = *src[i].p.(*time.Duration)
		case *int:
			*p = *src[i].p.(*int)
		case *float64:
			*p = *src[i].p.(*float64)
		case *string:
			*p = *src[i].p.(*string)
		}
	}
	return out
}

// args returns the flags that make s out of base, for the commands in the
// report ("" when s is base).
func (s scale) args(base scale) string {
	var out []string
	bf := base.fields()
	for i, f := range s.fields() {
		a, b := fmt.Sprint(deref(f.p)), fmt.Sprint(deref(bf[i].p))
		if a != b {
			out = append(out, "-"+f.name+"="+a)
		}
	}
	return strings.Join(out, " ")
}

func deref(p any) any {
	switch p := p.(type) {
	case *time.Duration:
		return *p
	case *int:
		return *p
	case *float64:
		return *p
	case *string:
		return *p
	}
	return nil
}
