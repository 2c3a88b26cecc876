package policy

import (
	"strings"
)

// This file runs the tests embedded in a policy file. They run on every
// Parse, so a policy whose tests fail never exists as a *Policy.

func (c *compiler) runTests(tests []rawTest) {
	for _, t := range tests {
		var id Identity
		switch {
		case strings.HasPrefix(t.src.s, "node:"):
			name, ok := c.checkPrefixed(t.src, "node:", "test src")
			if !ok {
				continue
			}
			id.Name = name
		case strings.HasPrefix(t.src.s, "spiffe://"):
			id.ID = t.src.s
			id.Name = nodeFromSPIFFE(t.src.s)
		default:
			c.errorf(t.src.p, "test src %q: want node:NAME or a SPIFFE ID", t.src.s)
			continue
		}
		svcName, ok := c.checkPrefixed(t.dst, "svc:", "test dst")
		if !ok {
			continue
		}
		svc := Service{Name: svcName}
		good := true
		for _, tag := range t.srcTags {
			good = c.checkTag(tag) && good
			id.Tags = append(id.Tags, strings.TrimPrefix(tag.s, "tag:"))
		}
		for _, tag := range t.dstTags {
			good = c.checkTag(tag) && good
			svc.Tags = append(svc.Tags, strings.TrimPrefix(tag.s, "tag:"))
		}
		if !good {
			continue
		}
		failed := false
		for _, e := range t.expect {
			d := c.p.Decide(Request{Src: id, Dst: svc, Kind: e.kind, Name: e.name.s, Args: t.args})
			if d.Allow == e.allow {
				continue
			}
			failed = true
			if e.allow {
				c.errorf(e.name.p, "test at %s failed: %s %q should be allowed, but is denied: %s", t.p, e.kind, e.name.s, d.Reason)
			} else {
				c.errorf(e.name.p, "test at %s failed: %s %q should be denied, but is allowed by %s", t.p, e.kind, e.name.s, d.Reason)
			}
		}
		if !failed {
			c.p.tests++
		}
	}
}

// nodeFromSPIFFE returns NAME from spiffe://TD/node/NAME (and from longer
// workload IDs under it), or "" for other IDs.
func nodeFromSPIFFE(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	_, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	name, ok := strings.CutPrefix(path, "node/")
	if !ok {
		return ""
	}
	name, _, _ = strings.Cut(name, "/")
	return name
}
