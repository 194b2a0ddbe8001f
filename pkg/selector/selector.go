// Package selector implements Calico's label selector language, the one used
// by IPPool.spec.nodeSelector, BGPPeer.spec.nodeSelector and
// BGPPeer.spec.peerSelector, so that manifests written for Calico select the
// same nodes under Wren.
//
// The language follows Calico's libcalico-go/lib/selector parser
// (https://docs.tigera.io/calico/latest/reference/resources/networkpolicy#selectors):
//
//	selector = [ or ] .                      // empty: matches everything
//	or       = and { "||" and } .            // lowest precedence
//	and      = unary { "&&" unary } .
//	unary    = { "!" } primary .              // highest precedence
//	primary  = "has(" key ")"                 // key present, any value
//	         | "all(" ")"                     // matches everything
//	         | key ( "==" | "!=" ) string
//	         | key ( "contains" | "starts with" | "ends with" ) string
//	         | key ( "in" | "not in" ) set
//	         | "(" or ")" .
//	set      = "{" [ string { "," string } [ "," ] ] "}" .
//	string   = "'" { byte except "'" } "'" | `"` { byte except `"` } `"` .
//	key      = { "a"-"z" | "A"-"Z" | "0"-"9" | "-" | "_" | "." | "/" }+ .  // 1 to 512 bytes
//
// Tokens may be separated by spaces and tabs, but a function name must be
// followed directly by "(" ("has (a)" is an error, as in Calico). Strings
// have no escapes: a value containing ' is written in double quotes and one
// containing " in single quotes. "&&" and "||" have no "and"/"or" spellings.
// As in Calico, "starts with", "ends with" and "not in" may also be written
// without the inner space, and a set may be empty or end with a comma.
//
// Matching follows Calico: "==", "in", "contains", "starts with" and
// "ends with" are false when the key is absent, while "!=" and "not in" are
// true when it is absent, so k != 'v' is the same as !(k == 'v').
//
// Not supported: global() (meaningful only for Calico's namespace
// selectors), and parentheses nested more than [MaxDepth] deep.
package selector

import (
	"fmt"
	"slices"
	"strings"
)

// MaxKeyLength is the longest label key Parse accepts, as in Calico.
// Kubernetes keys are at most 317 bytes (a 253-byte prefix, "/", 63 bytes).
const MaxKeyLength = 512

// MaxDepth is the deepest nesting of parentheses Parse accepts. It bounds
// the parser's recursion on hostile input; real selectors use two or three.
const MaxDepth = 100

// Selector is a compiled label selector. It is immutable and safe for
// concurrent use.
type Selector interface {
	// Matches reports whether a set of labels (a node's, say) satisfies the
	// selector. A nil map is a node without labels.
	Matches(labels map[string]string) bool
	// String returns the canonical form: Calico's, with "&&" and "||"
	// groups parenthesised, strings double-quoted unless they contain a
	// double quote, set members sorted and deduplicated, and "" written as
	// "all()". Parse(s.String()).String() == s.String().
	String() string
}

// SyntaxError reports why a selector failed to parse.
type SyntaxError struct {
	Selector string // the input to Parse
	Pos      int    // 0-based byte offset of the problem in Selector
	Msg      string // what was expected, or what is wrong
}

// Error renders the error as `selector "has(a) &&": position 9: ...`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("selector %q: position %d: %s", e.Selector, e.Pos, e.Msg)
}

// MustParse is Parse for constants and tests: it panics on error.
func MustParse(s string) Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// compiled is the Selector returned by Parse; the canonical string is
// rendered once, at parse time.
type compiled struct {
	root node
	str  string
}

func (c *compiled) Matches(labels map[string]string) bool { return c.root.match(labels) }
func (c *compiled) String() string                        { return c.str }

// node is one term of the parsed expression.
type node interface {
	match(labels map[string]string) bool
	// render appends the canonical form of the node to b.
	render(b *strings.Builder)
}

type allNode struct{}

func (allNode) match(map[string]string) bool { return true }
func (allNode) render(b *strings.Builder)    { b.WriteString("all()") }

type hasNode struct{ key string }

func (n hasNode) match(labels map[string]string) bool {
	_, ok := labels[n.key]
	return ok
}

func (n hasNode) render(b *strings.Builder) {
	b.WriteString("has(")
	b.WriteString(n.key)
	b.WriteString(")")
}

// cmpOp is an operator comparing a label's value with one string.
type cmpOp int

const (
	opEq cmpOp = iota
	opNe
	opContains
	opStartsWith
	opEndsWith
)

var cmpOpText = [...]string{
	opEq:         "==",
	opNe:         "!=",
	opContains:   "contains",
	opStartsWith: "starts with",
	opEndsWith:   "ends with",
}

type cmpNode struct {
	key, value string
	op         cmpOp
}

func (n cmpNode) match(labels map[string]string) bool {
	v, ok := labels[n.key]
	switch n.op {
	case opEq:
		return ok && v == n.value
	case opNe:
		// Calico: an absent key is "not equal" to every value.
		return !ok || v != n.value
	case opContains:
		return ok && strings.Contains(v, n.value)
	case opStartsWith:
		return ok && strings.HasPrefix(v, n.value)
	case opEndsWith:
		return ok && strings.HasSuffix(v, n.value)
	}
	panic(fmt.Sprintf("selector: unknown operator %d", n.op))
}

func (n cmpNode) render(b *strings.Builder) {
	b.WriteString(n.key)
	b.WriteString(" ")
	b.WriteString(cmpOpText[n.op])
	b.WriteString(" ")
	writeQuoted(b, n.value)
}

// setNode is "key in {...}" or, with not set, "key not in {...}".
type setNode struct {
	key    string
	values []string // sorted, no duplicates
	not    bool
}

func (n setNode) match(labels map[string]string) bool {
	v, ok := labels[n.key]
	if !ok {
		// Calico: an absent key is "not in" every set.
		return n.not
	}
	_, found := slices.BinarySearch(n.values, v)
	return found != n.not
}

func (n setNode) render(b *strings.Builder) {
	b.WriteString(n.key)
	if n.not {
		b.WriteString(" not in {")
	} else {
		b.WriteString(" in {")
	}
	for i, v := range n.values {
		if i > 0 {
			b.WriteString(", ")
		}
		writeQuoted(b, v)
	}
	b.WriteString("}")
}

type notNode struct{ operand node }

func (n notNode) match(labels map[string]string) bool { return !n.operand.match(labels) }

func (n notNode) render(b *strings.Builder) {
	b.WriteString("!")
	n.operand.render(b)
}

// negate returns !n, removing a double negation so that "!(!has(a))" and
// "has(a)" have the same canonical form.
func negate(n node) node {
	if inner, ok := n.(notNode); ok {
		return inner.operand
	}
	return notNode{n}
}

// boolNode is a run of two or more operands joined by "&&" or "||".
type boolNode struct {
	operands []node
	or       bool
}

func (n boolNode) match(labels map[string]string) bool {
	for _, o := range n.operands {
		if o.match(labels) == n.or {
			// The first true operand decides "||", the first false "&&".
			return n.or
		}
	}
	return !n.or
}

func (n boolNode) render(b *strings.Builder) {
	sep := " && "
	if n.or {
		sep = " || "
	}
	b.WriteString("(")
	for i, o := range n.operands {
		if i > 0 {
			b.WriteString(sep)
		}
		o.render(b)
	}
	b.WriteString(")")
}

// writeQuoted writes s in double quotes, or in single quotes if s contains
// a double quote. A parsed string never contains both.
func writeQuoted(b *strings.Builder, s string) {
	q := `"`
	if strings.Contains(s, `"`) {
		q = `'`
	}
	b.WriteString(q)
	b.WriteString(s)
	b.WriteString(q)
}
