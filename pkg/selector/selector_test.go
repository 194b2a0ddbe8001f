package selector

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// labels is shorthand for a label map in the tables below.
type labels = map[string]string

func TestMatches(t *testing.T) {
	tests := []struct {
		sel     string
		match   []labels
		noMatch []labels
	}{
		// Everything.
		{``, []labels{nil, {}, {"a": "b"}}, nil},
		{"  \t ", []labels{nil, {"a": "b"}}, nil},
		{`all()`, []labels{nil, {"a": "b"}}, nil},
		{` all( ) `, []labels{nil, {"a": "b"}}, nil},
		{`(all())`, []labels{{}}, nil},
		{`!all()`, nil, []labels{nil, {"a": "b"}}},

		// has.
		{`has(a)`, []labels{{"a": ""}, {"a": "x", "b": "y"}}, []labels{nil, {}, {"b": "a"}}},
		{`has( a )`, []labels{{"a": "x"}}, []labels{{"b": "x"}}},
		{`!has(a)`, []labels{nil, {"b": "a"}}, []labels{{"a": ""}}},

		// == and !=, in both quotings.
		{`a == 'b'`, []labels{{"a": "b"}, {"a": "b", "c": "d"}}, []labels{nil, {"a": "c"}, {"c": "b"}, {"a": "B"}, {"a": "b "}}},
		{`a == "b"`, []labels{{"a": "b"}}, []labels{{"a": "c"}, {}}},
		{`a == ''`, []labels{{"a": ""}}, []labels{{}, {"a": "x"}}},
		{`a != 'b'`, []labels{{"a": "c"}, {"a": ""}, {}, nil, {"c": "b"}}, []labels{{"a": "b"}}},
		{`a != ""`, []labels{{"a": "x"}, {}}, []labels{{"a": ""}}},

		// in and not in; absent keys are "not in" every set.
		{`a in {'x', "y"}`, []labels{{"a": "x"}, {"a": "y"}}, []labels{nil, {"a": "z"}, {"b": "x"}}},
		{`a in {"'", '"', "c"}`, []labels{{"a": "'"}, {"a": `"`}, {"a": "c"}}, []labels{{}, {"a": "e"}}},
		{`a not in {'x', 'y'}`, []labels{nil, {}, {"a": "z"}, {"b": "x"}}, []labels{{"a": "x"}, {"a": "y"}}},
		{`a in {}`, nil, []labels{nil, {"a": ""}, {"a": "x"}}},
		{`a not in {}`, []labels{nil, {"a": ""}, {"a": "x"}}, nil},
		{`a in {'x',}`, []labels{{"a": "x"}}, []labels{{"a": ""}}},
		{`a in {'z', 'x', 'z', 'y'}`, []labels{{"a": "x"}, {"a": "y"}, {"a": "z"}}, []labels{{"a": "w"}}},
		{`!a in {'x'}`, []labels{{"a": "y"}, {}}, []labels{{"a": "x"}}},

		// contains, starts with, ends with: false for absent keys.
		{`a contains 'ab'`, []labels{{"a": "ab"}, {"a": "xaby"}}, []labels{nil, {"a": "a"}, {"b": "ab"}}},
		{`a contains ''`, []labels{{"a": ""}, {"a": "x"}}, []labels{{}}},
		{`a starts with 'ab'`, []labels{{"a": "ab"}, {"a": "abc"}}, []labels{{}, {"a": "cab"}, {"b": "ab"}}},
		{`a ends with "ab"`, []labels{{"a": "ab"}, {"a": "cab"}}, []labels{{}, {"a": "abc"}, {"b": "ab"}}},
		{`!a contains 'x'`, []labels{{}, {"a": "y"}}, []labels{{"a": "axa"}}},

		// Keys with dots, slashes, dashes, digits, underscores.
		{`has(wren.network/route-reflector)`, []labels{{"wren.network/route-reflector": ""}}, []labels{{"route-reflector": ""}}},
		{`kubernetes.io/hostname == 'node-1'`, []labels{{"kubernetes.io/hostname": "node-1"}}, []labels{{"hostname": "node-1"}}},
		{`topology.kubernetes.io/zone in {'eu-1a', 'eu-1b'}`, []labels{{"topology.kubernetes.io/zone": "eu-1b"}}, []labels{{"topology.kubernetes.io/zone": "eu-1c"}}},
		{`_a.b-c/D_9 == 'x'`, []labels{{"_a.b-c/D_9": "x"}}, []labels{{"_a.b-c/d_9": "x"}}},
		{`123 == '4'`, []labels{{"123": "4"}}, nil},
		{`-- != 'x'`, []labels{{}, {"--": "y"}}, []labels{{"--": "x"}}},
		{strings.Repeat("k", MaxKeyLength) + ` == 'x'`, []labels{{strings.Repeat("k", MaxKeyLength): "x"}}, []labels{{}}},

		// Words that are keywords elsewhere are plain keys before an operator.
		{`in == 'x'`, []labels{{"in": "x"}}, []labels{{"in": "y"}}},
		{`has == 'x' && all == 'y'`, []labels{{"has": "x", "all": "y"}}, []labels{{"has": "x"}}},
		{`not in {'a'}`, []labels{{"not": "a"}}, []labels{{"not": "b"}, {}}},
		{`contains contains 'x'`, []labels{{"contains": "axb"}}, []labels{{"contains": "b"}}},

		// Quoting: the other quote character is literal; no escapes.
		{`a == "it's"`, []labels{{"a": "it's"}}, []labels{{"a": "its"}}},
		{`a == 'say "hi"'`, []labels{{"a": `say "hi"`}}, []labels{{"a": "say hi"}}},
		{`a == 'x && y || (z)'`, []labels{{"a": "x && y || (z)"}}, nil},
		{`a == '\'`, []labels{{"a": `\`}}, nil},
		{`a == ' spaced  out '`, []labels{{"a": " spaced  out "}}, []labels{{"a": "spaced out"}}},
		{`a == 'ünï'`, []labels{{"a": "ünï"}}, nil},

		// Negation: repeated "!" collapse.
		{`!!has(a)`, []labels{{"a": ""}}, []labels{{}}},
		{`! ! !has(a)`, []labels{{}}, []labels{{"a": ""}}},
		{`!(!has(a))`, []labels{{"a": ""}}, []labels{{}}},
		{`!a == 'x'`, []labels{{}, {"a": "y"}}, []labels{{"a": "x"}}},

		// Precedence: ! binds tighter than &&, which binds tighter than ||.
		{`has(a) || has(b) && has(c)`,
			[]labels{{"a": ""}, {"b": "", "c": ""}},
			[]labels{{}, {"b": ""}, {"c": ""}}},
		{`has(a) && has(b) || has(c)`,
			[]labels{{"c": ""}, {"a": "", "b": ""}},
			[]labels{{}, {"a": ""}, {"b": ""}}},
		{`!has(a) && has(b)`, []labels{{"b": ""}}, []labels{{"a": "", "b": ""}, {}}},
		{`!has(a) || has(b)`, []labels{{}, {"a": "", "b": ""}}, []labels{{"a": ""}}},
		{`!(has(a) && has(b))`, []labels{{}, {"a": ""}}, []labels{{"a": "", "b": ""}}},
		{`!(has(a) || has(b))`, []labels{{}}, []labels{{"a": ""}, {"b": ""}}},

		// Parentheses override precedence.
		{`(has(a) || has(b)) && has(c)`,
			[]labels{{"a": "", "c": ""}, {"b": "", "c": ""}},
			[]labels{{"a": ""}, {"c": ""}}},
		{`has(a) && (has(b) || has(c))`,
			[]labels{{"a": "", "b": ""}, {"a": "", "c": ""}},
			[]labels{{"a": ""}, {"b": "", "c": ""}}},
		{`((((has(a)))))`, []labels{{"a": ""}}, []labels{{}}},
		{`has(a) && has(b) && has(c) && has(d)`,
			[]labels{{"a": "", "b": "", "c": "", "d": ""}},
			[]labels{{"a": "", "b": "", "c": ""}}},
		{`has(a) || has(b) || has(c) || has(d)`, []labels{{"d": ""}}, []labels{{"e": ""}}},

		// Whitespace: none needed around punctuation, any spaces and tabs allowed.
		{`a=='b'&&b!="c"`, []labels{{"a": "b"}}, []labels{{"a": "b", "b": "c"}}},
		{"a \t==\t 'b'", []labels{{"a": "b"}}, nil},
		{`(has(a))||(has(b))`, []labels{{"b": ""}}, []labels{{}}},
		{`a in{'x'}`, []labels{{"a": "x"}}, nil},
		{`a not in{'x'}`, []labels{{"a": "y"}}, []labels{{"a": "x"}}},
		{`a contains'x'`, []labels{{"a": "x"}}, nil},
		{`a starts with"x"`, []labels{{"a": "xy"}}, nil},
		{`   has(a)   `, []labels{{"a": ""}}, nil},
		{"a not \t in {'x'}", []labels{{"a": "y"}}, []labels{{"a": "x"}}},
		{"a starts \t with 'x'", []labels{{"a": "xy"}}, nil},

		// Calico also accepts the two-word operators without the space.
		{`a startswith 'x'`, []labels{{"a": "xy"}}, []labels{{"a": "yx"}}},
		{`a endswith 'x'`, []labels{{"a": "yx"}}, []labels{{"a": "xy"}}},
		{`a notin {'x'}`, []labels{{"a": "y"}, {}}, []labels{{"a": "x"}}},

		// Typical Wren uses.
		{`has(wren.network/route-reflector) && kubernetes.io/os == 'linux'`,
			[]labels{{"wren.network/route-reflector": "true", "kubernetes.io/os": "linux"}},
			[]labels{{"wren.network/route-reflector": "true"}, {"kubernetes.io/os": "linux"}}},
		{`rack == 'r1' || rack == 'r2' && !has(decommissioned)`,
			[]labels{{"rack": "r1", "decommissioned": ""}, {"rack": "r2"}},
			[]labels{{"rack": "r2", "decommissioned": ""}, {"rack": "r3"}}},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.sel)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.sel, err)
			continue
		}
		// The canonical form must select the same label sets.
		canon, err := Parse(sel.String())
		if err != nil {
			t.Errorf("Parse(%q) (canonical form of %q): %v", sel.String(), tt.sel, err)
			continue
		}
		for _, s := range []Selector{sel, canon} {
			for _, l := range tt.match {
				if !s.Matches(l) {
					t.Errorf("Parse(%q) = %q: Matches(%v) = false, want true", tt.sel, s, l)
				}
			}
			for _, l := range tt.noMatch {
				if s.Matches(l) {
					t.Errorf("Parse(%q) = %q: Matches(%v) = true, want false", tt.sel, s, l)
				}
			}
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, `all()`},
		{` `, `all()`},
		{` all( ) `, `all()`},
		{` (all() )`, `all()`},
		{`has( a )`, `has(a)`},
		{`a=='b'`, `a == "b"`},
		{`a == "'"`, `a == "'"`},
		{`a == '"'`, `a == '"'`},
		{`a!='"'`, `a != '"'`},
		{`a contains "'"`, `a contains "'"`},
		{`a startswith '"'`, `a starts with '"'`},
		{`a ends  with 'x'`, `a ends with "x"`},
		{`a notin {'x'}`, `a not in {"x"}`},
		{`a in {}`, `a in {}`},
		{`a in {'x',}`, `a in {"x"}`},
		{`a in {"d", "a", "b"}`, `a in {"a", "b", "d"}`},
		{`a in {"z", "z", "x", "y", "x", "a"}`, `a in {"a", "x", "y", "z"}`},
		{`a in {'"', "'", ''}`, `a in {"", '"', "'"}`},
		{`a not in {'b','a'}`, `a not in {"a", "b"}`},
		{`has(a) && has(b)`, `(has(a) && has(b))`},
		{`has(a) || has(b) && has(c)`, `(has(a) || (has(b) && has(c)))`},
		{`(has(a) || has(b)) && has(c)`, `((has(a) || has(b)) && has(c))`},
		{`(has(a) && has(b)) && has(c)`, `((has(a) && has(b)) && has(c))`},
		{`has(a) && has(b) && has(c)`, `(has(a) && has(b) && has(c))`},
		{`! (has( b)||! has(a ))`, `!(has(b) || !has(a))`},
		{`! (a == "b"&&! c != "d")`, `!(a == "b" && !c != "d")`},
		{`!(k == 'v')`, `!k == "v"`},
		{`!!has(a)`, `has(a)`},
		{`!!!has(a)`, `!has(a)`},
		{`!(!has(a))`, `has(a)`},
		{`!(!(!has(a)))`, `!has(a)`},
		{`!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))`,
			`!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})`},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := sel.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		again, err := Parse(tt.want)
		if err != nil {
			t.Errorf("Parse(%q) (canonical): %v", tt.want, err)
			continue
		}
		if got := again.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, not a fixed point", tt.want, got)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		sel  string
		pos  int
		want string // a substring of the message
	}{
		// Dangling operators.
		{`has(a) &&`, 9, `expected an expression after "&&"`},
		{`has(a) ||`, 9, `expected an expression after "||"`},
		{`has(a) && `, 10, `expected an expression after "&&"`},
		{`&& has(a)`, 0, `expected an expression, found "&&"`},
		{`has(a) && || has(b)`, 10, `expected an expression after "&&", found "||"`},
		{`!`, 1, `expected an expression after "!"`},
		{`has(a) && !`, 11, `expected an expression after "!"`},
		{`a ==`, 4, `expected a quoted string after "==", found the end of the selector`},
		{`a !=`, 4, `expected a quoted string after "!="`},
		{`a in`, 4, `expected "{" after "in", found the end of the selector`},
		{`a not in`, 8, `expected "{" after "not in"`},
		{`a contains`, 10, `expected a quoted string after "contains"`},
		{`a starts with`, 13, `expected a quoted string after "starts with"`},
		{`a ends with`, 11, `expected a quoted string after "ends with"`},

		// Unterminated strings, reported at the opening quote.
		{`a == 'b`, 5, `unterminated string: no closing '`},
		{`a == "b`, 5, `unterminated string: no closing "`},
		{`"FOO'`, 0, `unterminated string: no closing "`},
		{`a in {'x', 'y}`, 11, `unterminated string`},

		// Parentheses.
		{`(`, 1, `expected an expression after "("`},
		{`()`, 1, `expected an expression after "(", found ")"`},
		{`(has(a)`, 7, `expected ")" to close "(" at position 0, found the end of the selector`},
		{`(has(a) && (has(b))`, 19, `expected ")" to close "(" at position 0`},
		{`(has(a) has(b))`, 8, `expected ")" to close "(" at position 0, found has(b)`},
		{`)`, 0, `expected an expression, found ")"`},
		{`has(a))`, 6, `unexpected ")" with no matching "("`},
		{strings.Repeat("(", MaxDepth+1) + "has(a)" + strings.Repeat(")", MaxDepth+1), MaxDepth, `nested more than 100 deep`},

		// Functions.
		{`foo(a)`, 0, `unknown function foo(): expected has(key) or all()`},
		{`has(a) && Has(b)`, 10, `unknown function Has()`},
		{`global()`, 0, `global() is not supported`},
		{`has()`, 4, `expected a label key inside has(), found ')'`},
		{`has(`, 4, `expected a label key inside has(), found the end of the selector`},
		{`has('a')`, 4, `expected a label key inside has(), found '\''`},
		{`has(a`, 5, `expected ")" to close "has(" at position 0, found the end of the selector`},
		{`has(a b)`, 6, `expected ")" to close "has(" at position 0, found 'b'`},
		{`all(a)`, 4, `expected ")": all() takes no arguments, found 'a'`},
		{`has (a)`, 4, `found "("; write has( with no space`},

		// Labels without a valid operator or operand.
		{`a`, 1, `expected an operator (==, !=, in, not in, contains, starts with, ends with) after label key "a", found the end of the selector`},
		{`a `, 2, `after label key "a", found the end of the selector`},
		{`a b`, 2, `expected an operator (==, !=, in, not in, contains, starts with, ends with) after label key "a", found "b"`},
		{`a = 'b'`, 2, `expected "==", found a single "="`},
		{`a === 'b'`, 4, `expected "==", found a single "="`},
		{`a == b`, 5, `expected a quoted string after "==", found label key "b"`},
		{`a contains b`, 11, `expected a quoted string after "contains", found label key "b"`},
		{`a starts 'x'`, 9, `expected "with" after "starts", found '\''`},
		{`a ends at 'x'`, 7, `expected "with" after "ends", found "at"`},
		{`a not 'x'`, 6, `expected "in" after "not", found '\''`},
		{`a in 'x'`, 5, `expected "{" after "in", found string "x"`},
		{`'b1' == b`, 0, `expected an expression, found string "b1"`},
		{`a ! = 'b'`, 2, `after label key "a", found "!"`},
		{`!= 'a'`, 0, `expected an expression, found "!="`},
		{`a (`, 2, `after label key "a", found "("`},

		// Sets.
		{`a in {'x'`, 9, `expected "}" to close "{" at position 5`},
		{`a in {'x' 'y'}`, 10, `expected "," or "}" after a set member, found string "y"`},
		{`a in {,'x'}`, 6, `expected a quoted string or "}" in set, found ","`},
		{`a in {'x',,}`, 10, `expected a quoted string or "}" in set, found ","`},
		{`a in {x}`, 6, `expected a quoted string or "}" in set, found label key "x"`},
		{`a in {"", ||`, 10, `expected a quoted string or "}" in set, found "||"`},

		// Boolean operators: only && and ||.
		{`has(a) & has(b)`, 7, `expected "&&", found a single "&"`},
		{`has(a) | has(b)`, 7, `expected "||", found a single "|"`},
		{`a == 'x' and b == 'y'`, 9, `expected "&&", "||" or the end of the selector, found label key "and"`},
		{`has(a) or has(b)`, 7, `expected "&&", "||" or the end of the selector, found label key "or"`},
		{`has(a) has(b)`, 7, `expected "&&", "||" or the end of the selector, found has(b)`},
		{`a == 'b' 'c'`, 9, `found string "c"`},

		// Over-long keys, as in Calico.
		{strings.Repeat("k", MaxKeyLength+1) + ` == 'x'`, 0, `label key is 513 bytes long, more than 512`},
		{`has(` + strings.Repeat("k", MaxKeyLength+1) + `)`, 4, `label key is 513 bytes long, more than 512`},

		// Characters outside the language.
		{`%`, 0, `unexpected '%'`},
		{`a == "b" && %`, 12, `unexpected '%'`},
		{`a == "b" || %`, 12, `unexpected '%'`},
		{`has(ä)`, 4, `expected a label key inside has(), found 'ä'`},
		{`ä == 'x'`, 0, `unexpected 'ä'`},
		{"has(a)\n&& has(b)", 6, `unexpected line break: only spaces and tabs may separate tokens`},
		{"has(a)\r\n", 6, `unexpected line break`},
		{"a ==\v'b'", 4, `unexpected '\v'`},
		{"\xff", 0, `unexpected byte 0xff (not UTF-8)`},
		// The lexer's error wins wherever the parser is in the grammar.
		{`!%`, 1, `unexpected '%'`},
		{`(%`, 1, `unexpected '%'`},
		{`a %`, 2, `unexpected '%'`},
		{`a == %`, 5, `unexpected '%'`},
		{`a in %`, 5, `unexpected '%'`},
		{`a in {%`, 6, `unexpected '%'`},
		{`a in {'x' %`, 10, `unexpected '%'`},
		{`a in {'x', %`, 11, `unexpected '%'`},
		{`a in {'x'} %`, 11, `unexpected '%'`},
		{`(has(a) %`, 8, `unexpected '%'`},
		{`has(a) && has(b) %`, 17, `unexpected '%'`},
		{"has(\xff)", 4, `expected a label key inside has(), found byte 0xff (not UTF-8)`},
		{"a == '\xff' && \xfe", 12, `unexpected byte 0xfe`},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.sel)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want error %q", tt.sel, sel, tt.want)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) error %q is a %T, want *SyntaxError", tt.sel, err, err)
			continue
		}
		prefix := fmt.Sprintf("selector %q: position %d: ", tt.sel, tt.pos)
		if se.Pos != tt.pos || se.Selector != tt.sel || !strings.HasPrefix(err.Error(), prefix) {
			t.Errorf("Parse(%q) error %q, want prefix %q", tt.sel, err, prefix)
		}
		if !strings.Contains(se.Msg, tt.want) {
			t.Errorf("Parse(%q) error %q, want it to contain %q", tt.sel, err, tt.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	_, err := Parse("has(a) &&")
	want := `selector "has(a) &&": position 9: expected an expression after "&&"`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error = %v, want %s", err, want)
	}
}

func TestMaxDepthAccepted(t *testing.T) {
	s := strings.Repeat("(", MaxDepth) + "has(a)" + strings.Repeat(")", MaxDepth)
	sel, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%d nested parentheses): %v", MaxDepth, err)
	}
	if got := sel.String(); got != "has(a)" {
		t.Errorf("String() = %q, want has(a)", got)
	}
	// Depth counts open parentheses, not their total: siblings are fine.
	s = strings.Repeat("(has(a)) && ", 3*MaxDepth) + "has(b)"
	if _, err := Parse(s); err != nil {
		t.Errorf("Parse(%d sibling parentheses): %v", 3*MaxDepth, err)
	}
}

func TestMustParse(t *testing.T) {
	if got := MustParse("has(a)").String(); got != "has(a)" {
		t.Errorf("MustParse(has(a)).String() = %q", got)
	}
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !strings.Contains(err.Error(), "unknown function") {
			t.Errorf("MustParse(foo()) panicked with %v, want a *SyntaxError", r)
		}
	}()
	MustParse("foo()")
	t.Error("MustParse(foo()) did not panic")
}

// fuzzLabels are label sets on which a selector and its canonical form must
// agree.
var fuzzLabels = []labels{
	nil,
	{"a": ""},
	{"a": "b"},
	{"a": "x", "b": "y", "c": "z"},
	{"a": "'", "b": `"`},
	{"kubernetes.io/hostname": "node-1", "in": "a"},
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		``, `all()`, `has(a)`, `!has(a)`, `a == 'b'`, `a != "b"`, `a in {'x', "y"}`,
		`a not in {}`, `a contains 'x'`, `a starts with 'x'`, `a ends with 'x'`,
		`a startswith 'x'`, `a notin {'x',}`, `(has(a) || has(b)) && !c == 'd'`,
		`!(!has(a))`, `a == "'" || b == '"'`, `kubernetes.io/hostname in {'node-1'}`,
		`has(a) &&`, `(has(a)`, `a == 'b`, `foo(a)`, `has (a)`, `in == 'x'`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error %q is a %T, want *SyntaxError", s, err, err)
			}
			if se.Pos < 0 || se.Pos > len(s) {
				t.Fatalf("Parse(%q) error position %d outside [0, %d]", s, se.Pos, len(s))
			}
			return
		}
		canon := sel.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q, which does not parse: %v", s, canon, err)
		}
		if got := again.String(); got != canon {
			t.Fatalf("Parse(%q).String() = %q, but that parses to %q", s, canon, got)
		}
		for _, l := range fuzzLabels {
			if sel.Matches(l) != again.Matches(l) {
				t.Fatalf("Parse(%q) and its canonical form %q disagree on %v", s, canon, l)
			}
		}
	})
}
