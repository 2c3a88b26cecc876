package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"

	"github.com/tailscale/hujson"
)

// This file turns HuJSON text into raw, position-carrying structures. It
// checks shape only (types, unknown and duplicate keys); meaning is checked
// by the compiler.

// str is a string from the file with the position of its opening quote.
type str struct {
	s   string
	p   pos
	off int // byte offset of the opening quote
}

type rawGroup struct {
	name    str
	members []str
}

type rawTagOwner struct {
	tag    str
	owners []str
}

type rawGrant struct {
	p        pos
	src, dst []str
	names    [numKinds][]str
	when     *str
	origin   *str
}

type expectation struct {
	kind  Kind
	allow bool
	name  str
}

type rawTest struct {
	p       pos
	src     str
	srcTags []str
	dst     str
	dstTags []str
	expect  []expectation
	args    map[string]any
}

type rawPolicy struct {
	groups    []rawGroup
	tagOwners []rawTagOwner
	grants    []rawGrant
	tests     []rawTest
}

type parser struct {
	file  string
	src   []byte
	lines lineIndex
	errs  ErrorList
}

func (p *parser) errorf(at pos, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: at.line, Col: at.col, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) at(v *hujson.Value) pos { return p.lines.pos(v.StartOffset) }

var hujsonErrPos = regexp.MustCompile(`^hujson: line (\d+), column (\d+): `)

// parse reads the whole file. It returns nil when the text is not HuJSON at
// all; otherwise it returns what it could make sense of, with errors recorded.
func (p *parser) parse() *rawPolicy {
	root, err := hujson.Parse(p.src)
	if err != nil {
		msg := err.Error()
		at := pos{1, 1}
		if m := hujsonErrPos.FindStringSubmatch(msg); m != nil {
			at.line, _ = strconv.Atoi(m[1])
			at.col, _ = strconv.Atoi(m[2])
			msg = msg[len(m[0]):]
		}
		p.errorf(at, "syntax error: %s", msg)
		return nil
	}
	p.checkDuplicates(&root)
	rp := &rawPolicy{}
	members, ok := p.object(&root, "policy")
	if !ok {
		return rp
	}
	for _, m := range members {
		key := m.Name.Value.(hujson.Literal).String()
		switch key {
		case "groups":
			p.groups(rp, &m.Value)
		case "tagOwners":
			p.tagOwners(rp, &m.Value)
		case "grants":
			p.grants(rp, &m.Value)
		case "tests":
			p.tests(rp, &m.Value)
		default:
			p.errorf(p.at(&m.Name), "unknown top-level key %q (want groups, tagOwners, grants or tests)", key)
		}
	}
	return rp
}

// checkDuplicates refuses duplicate keys anywhere in the document: JSON
// decoders disagree on which one wins, and a policy must mean one thing.
func (p *parser) checkDuplicates(v *hujson.Value) {
	switch t := v.Value.(type) {
	case *hujson.Object:
		seen := make(map[string]bool, len(t.Members))
		for i := range t.Members {
			m := &t.Members[i]
			k := m.Name.Value.(hujson.Literal).String()
			if seen[k] {
				p.errorf(p.at(&m.Name), "duplicate key %q", k)
			}
			seen[k] = true
			p.checkDuplicates(&m.Value)
		}
	case *hujson.Array:
		for i := range t.Elements {
			p.checkDuplicates(&t.Elements[i])
		}
	}
}

func (p *parser) object(v *hujson.Value, what string) ([]hujson.ObjectMember, bool) {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		p.errorf(p.at(v), "%s: expected an object", what)
		return nil, false
	}
	return obj.Members, true
}

func (p *parser) array(v *hujson.Value, what string) ([]hujson.Value, bool) {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		p.errorf(p.at(v), "%s: expected an array", what)
		return nil, false
	}
	return arr.Elements, true
}

func (p *parser) str(v *hujson.Value, what string) (str, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		p.errorf(p.at(v), "%s: expected a string", what)
		return str{}, false
	}
	return str{lit.String(), p.at(v), v.StartOffset}, true
}

// strings reads an array of strings. The result is non-nil for a present but
// empty array, so callers can tell "absent" from "empty".
func (p *parser) strings(v *hujson.Value, what string) []str {
	elems, ok := p.array(v, what)
	if !ok {
		return []str{}
	}
	out := make([]str, 0, len(elems))
	for i := range elems {
		if s, ok := p.str(&elems[i], what); ok {
			out = append(out, s)
		}
	}
	return out
}

func keyOf(m *hujson.ObjectMember) string { return m.Name.Value.(hujson.Literal).String() }

func (p *parser) groups(rp *rawPolicy, v *hujson.Value) {
	members, _ := p.object(v, "groups")
	for i := range members {
		m := &members[i]
		rp.groups = append(rp.groups, rawGroup{
			name:    str{keyOf(m), p.at(&m.Name), m.Name.StartOffset},
			members: p.strings(&m.Value, "group members"),
		})
	}
}

func (p *parser) tagOwners(rp *rawPolicy, v *hujson.Value) {
	members, _ := p.object(v, "tagOwners")
	for i := range members {
		m := &members[i]
		rp.tagOwners = append(rp.tagOwners, rawTagOwner{
			tag:    str{keyOf(m), p.at(&m.Name), m.Name.StartOffset},
			owners: p.strings(&m.Value, "tag owners"),
		})
	}
}

var kindKeys = [numKinds]string{KindTool: "tools", KindResource: "resources", KindPrompt: "prompts"}

func (p *parser) grants(rp *rawPolicy, v *hujson.Value) {
	elems, _ := p.array(v, "grants")
	for i := range elems {
		members, ok := p.object(&elems[i], "grant")
		if !ok {
			continue
		}
		g := rawGrant{p: p.at(&elems[i])}
	fields:
		for j := range members {
			m := &members[j]
			switch k := keyOf(m); k {
			case "src":
				g.src = p.strings(&m.Value, "src")
			case "dst":
				g.dst = p.strings(&m.Value, "dst")
			case "when":
				if s, ok := p.str(&m.Value, "when"); ok {
					g.when = &s
				}
			case "origin":
				if s, ok := p.str(&m.Value, "origin"); ok {
					g.origin = &s
				}
			default:
				for kind, key := range kindKeys {
					if k == key {
						g.names[kind] = p.strings(&m.Value, key)
						continue fields
					}
				}
				p.errorf(p.at(&m.Name), "grant: unknown key %q (want src, dst, tools, resources, prompts, when or origin)", k)
			}
		}
		rp.grants = append(rp.grants, g)
	}
}

func (p *parser) tests(rp *rawPolicy, v *hujson.Value) {
	elems, _ := p.array(v, "tests")
	for i := range elems {
		members, ok := p.object(&elems[i], "test")
		if !ok {
			continue
		}
		t := rawTest{p: p.at(&elems[i])}
		var haveSrc, haveDst bool
		for j := range members {
			m := &members[j]
			expect := func(kind Kind, allow bool) {
				for _, s := range p.strings(&m.Value, keyOf(m)) {
					t.expect = append(t.expect, expectation{kind, allow, s})
				}
			}
			switch k := keyOf(m); k {
			case "src":
				t.src, haveSrc = p.str(&m.Value, "test src")
			case "dst":
				t.dst, haveDst = p.str(&m.Value, "test dst")
			case "srcTags":
				t.srcTags = p.strings(&m.Value, k)
			case "dstTags":
				t.dstTags = p.strings(&m.Value, k)
			case "allow":
				expect(KindTool, true)
			case "deny":
				expect(KindTool, false)
			case "allowResources":
				expect(KindResource, true)
			case "denyResources":
				expect(KindResource, false)
			case "allowPrompts":
				expect(KindPrompt, true)
			case "denyPrompts":
				expect(KindPrompt, false)
			case "args":
				t.args = p.args(&m.Value)
			default:
				p.errorf(p.at(&m.Name), "test: unknown key %q", k)
			}
		}
		if !haveSrc {
			p.errorf(t.p, "test: missing src")
		}
		if !haveDst {
			p.errorf(t.p, "test: missing dst")
		}
		if len(t.expect) == 0 {
			p.errorf(t.p, "test: no expectations (want allow, deny, allowResources, denyResources, allowPrompts or denyPrompts)")
		}
		rp.tests = append(rp.tests, t)
	}
}

// args decodes a test's arguments as plain JSON, as a real call's arguments
// would arrive: numbers become float64 (or int64 when integral, see normArgs).
func (p *parser) args(v *hujson.Value) map[string]any {
	if _, ok := v.Value.(*hujson.Object); !ok {
		p.errorf(p.at(v), "args: expected an object")
		return nil
	}
	c := v.Clone()
	c.Standardize()
	var out map[string]any
	d := json.NewDecoder(bytes.NewReader(c.Pack()))
	if err := d.Decode(&out); err != nil {
		p.errorf(p.at(v), "args: %v", err)
		return nil
	}
	return out
}
