package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// This file cuts a policy down to what one serving node needs.

type docJSON struct {
	Groups    map[string][]string `json:"groups,omitempty"`
	TagOwners map[string][]string `json:"tagOwners,omitempty"`
	Grants    []grantJSON         `json:"grants"`
}

type grantJSON struct {
	Src       []string `json:"src"`
	Dst       []string `json:"dst"`
	Tools     []string `json:"tools,omitempty"`
	Resources []string `json:"resources,omitempty"`
	Prompts   []string `json:"prompts,omitempty"`
	When      string   `json:"when,omitempty"`
	Origin    string   `json:"origin"`
}

// ForServices returns a standalone policy document (plain JSON, which Parse
// accepts) holding only the grants whose dst can match one of svcs, each cut
// down to the dst entries that do. Groups in sources are expanded, so the
// node does not learn group names it has no use for; tag owners (and the
// groups they name) are kept only for the tags still used. Tests are left
// out: they ran where the policy was applied, and they may name services the
// node does not host. Every grant carries an "origin" with its position in
// the admin's file, so the serving node's decisions and audit events name the
// grant the admin wrote. For the given services, the result decides exactly
// as p does; every other service is denied.
func (p *Policy) ForServices(svcs []Service) ([]byte, error) {
	doc := docJSON{Grants: []grantJSON{}}
	usedTags := map[string]bool{}
	for _, g := range p.grants {
		var dst []string
		for _, d := range g.dstRaw {
			if name, ok := strings.CutPrefix(d.s, "svc:"); ok {
				if slices.ContainsFunc(svcs, func(s Service) bool { return s.Name == name }) {
					dst = appendUnique(dst, d.s)
				}
			} else if tag, ok := strings.CutPrefix(d.s, "tag:"); ok {
				if slices.ContainsFunc(svcs, func(s Service) bool { return slices.Contains(s.Tags, tag) }) {
					dst = appendUnique(dst, d.s)
					usedTags[d.s] = true
				}
			}
		}
		if len(dst) == 0 {
			continue
		}
		for _, s := range g.src {
			if strings.HasPrefix(s, "tag:") {
				usedTags[s] = true
			}
		}
		doc.Grants = append(doc.Grants, grantJSON{
			Src:       g.src,
			Dst:       dst,
			Tools:     g.names[KindTool].raw,
			Resources: g.names[KindResource].raw,
			Prompts:   g.names[KindPrompt].raw,
			When:      g.when,
			Origin:    g.ref.String(),
		})
	}
	// Tag owners may name tags and groups, which must then be defined too.
	needGroups := map[string]bool{}
	var addTag func(t string)
	var addGroup func(g string)
	addTag = func(t string) {
		if doc.TagOwners == nil {
			doc.TagOwners = map[string][]string{}
		}
		if _, ok := doc.TagOwners[t]; ok {
			return
		}
		owners := []string{}
		for _, o := range p.tagOwners[t] {
			owners = append(owners, o.s)
		}
		doc.TagOwners[t] = owners
		for _, o := range owners {
			switch {
			case strings.HasPrefix(o, "tag:"):
				addTag(o)
			case strings.HasPrefix(o, "group:"):
				addGroup(o)
			}
		}
	}
	addGroup = func(g string) {
		if needGroups[g] {
			return
		}
		needGroups[g] = true
		if doc.Groups == nil {
			doc.Groups = map[string][]string{}
		}
		members := []string{}
		for _, m := range p.groups[g] {
			members = append(members, m.s)
			switch {
			case strings.HasPrefix(m.s, "tag:"):
				addTag(m.s)
			case strings.HasPrefix(m.s, "group:"):
				addGroup(m.s)
			}
		}
		doc.Groups[g] = members
	}
	for t := range usedTags {
		addTag(t)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<" readable in when conditions
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("policy: encoding policy for services: %w", err)
	}
	return buf.Bytes(), nil
}
