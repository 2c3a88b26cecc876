package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkDecide measures the compiled evaluator against the naive one (a
// linear scan over every grant, groups walked as written) on the same
// requests, and reports both and their ratio. Policies are synthetic but
// shaped like real ones: many services, nodes in groups, tagged bots, globbed
// tools, some SPIFFE patterns, a fifth of grants with CEL conditions.
func BenchmarkDecide(b *testing.B) {
	for _, size := range []struct {
		grants, services, nodes, groups int
	}{
		{10, 3, 10, 3},
		{10_000, 1_000, 2_000, 200},
	} {
		b.Run(fmt.Sprintf("grants=%d", size.grants), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(uint64(size.grants), 1))
			g := genConfig{services: size.services, nodes: size.nodes, tags: 20, svcTags: max(3, size.services/30), groups: size.groups, grants: size.grants, whenShare: 0.2}
			p, err := Parse("bench.hujson", g.generate(rng))
			if err != nil {
				b.Fatal(err)
			}
			reqs := make([]Request, 1024)
			for i := range reqs {
				reqs[i] = g.request(rng)
			}
			ref := &naive{p: p, glob: matchGlob}
			allowed := 0
			for _, r := range reqs {
				if p.Decide(r).Allow {
					allowed++
				}
			}

			b.ResetTimer()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				p.Decide(reqs[i%len(reqs)])
			}
			compiled := float64(time.Since(start).Nanoseconds()) / float64(b.N)

			// The naive evaluator is timed on the same requests, after the
			// measured loop, so that b's own ns/op is the compiled one.
			b.StopTimer()
			n := min(b.N, 2000)
			start = time.Now()
			for i := range n {
				ref.decide(reqs[i%len(reqs)])
			}
			naiveNs := float64(time.Since(start).Nanoseconds()) / float64(n)

			b.ReportMetric(naiveNs, "naive-ns/op")
			b.ReportMetric(naiveNs/compiled, "speedup")
			b.ReportMetric(float64(allowed)/float64(len(reqs))*100, "%allowed")
		})
	}
}

// BenchmarkParse measures compiling a 10,000-grant policy, which the
// coordinator does on every check and apply.
func BenchmarkParse(b *testing.B) {
	g := genConfig{services: 1_000, nodes: 2_000, tags: 20, svcTags: 30, groups: 200, grants: 10_000, whenShare: 0.2}
	src := g.generate(rand.New(rand.NewPCG(1, 1)))
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := Parse("bench.hujson", src); err != nil {
			b.Fatal(err)
		}
	}
}
