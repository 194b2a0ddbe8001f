package selector

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Parse compiles a selector. On failure it returns a *SyntaxError naming
// the byte offset and what was expected there, e.g.
// `selector "has(a) &&": position 9: expected an expression after "&&"`.
func Parse(s string) (Selector, error) {
	p := &parser{lex: lexer{src: s}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	var root node = allNode{}
	if p.tok.kind != tokEOF {
		var err error
		if root, err = p.parseOr(""); err != nil {
			return nil, err
		}
		switch p.tok.kind {
		case tokEOF:
		case tokRParen:
			return nil, p.errorf(p.tok.pos, `unexpected ")" with no matching "("`)
		default:
			return nil, p.errorf(p.tok.pos, `expected "&&", "||" or the end of the selector, found %s`, p.tok)
		}
	}
	var b strings.Builder
	root.render(&b)
	return &compiled{root: root, str: b.String()}, nil
}

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokKey
	tokString
	tokHas // has(key); val is the key
	tokAll // all()
	tokNot
	tokAnd
	tokOr
	tokLParen
	tokRParen
	tokLBrace
	tokRBrace
	tokComma
	tokEq
	tokNe
	tokContains
	tokStartsWith
	tokEndsWith
	tokIn
	tokNotIn
)

// tokenText is how a token of each kind is quoted in error messages.
var tokenText = [...]string{
	tokEOF:        "the end of the selector",
	tokAll:        "all()",
	tokNot:        `"!"`,
	tokAnd:        `"&&"`,
	tokOr:         `"||"`,
	tokLParen:     `"("`,
	tokRParen:     `")"`,
	tokLBrace:     `"{"`,
	tokRBrace:     `"}"`,
	tokComma:      `","`,
	tokEq:         `"=="`,
	tokNe:         `"!="`,
	tokContains:   `"contains"`,
	tokStartsWith: `"starts with"`,
	tokEndsWith:   `"ends with"`,
	tokIn:         `"in"`,
	tokNotIn:      `"not in"`,
}

type token struct {
	kind tokenKind
	pos  int    // byte offset of the token's first character
	val  string // key or string contents
}

func (t token) String() string {
	switch t.kind {
	case tokKey:
		return fmt.Sprintf("label key %q", t.val)
	case tokString:
		return fmt.Sprintf("string %q", t.val)
	case tokHas:
		return fmt.Sprintf("has(%s)", t.val)
	}
	return tokenText[t.kind]
}

// lexer splits a selector into tokens on demand. Like Calico's tokenizer it
// is context sensitive: after a label key, a word is an operator ("in",
// "contains", ...); elsewhere it is a label key, or a function if "("
// follows it directly. That lets keys be spelled "in" or "has".
type lexer struct {
	src  string
	pos  int
	prev token // the last token returned
}

func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '/'
}

func (l *lexer) skipSpace() {
	for l.pos < len(l.src) && (l.src[l.pos] == ' ' || l.src[l.pos] == '\t') {
		l.pos++
	}
}

// word consumes and returns a run of key bytes, possibly empty.
func (l *lexer) word() string {
	start := l.pos
	for l.pos < len(l.src) && isKeyByte(l.src[l.pos]) {
		l.pos++
	}
	return l.src[start:l.pos]
}

func (l *lexer) errorf(pos int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Selector: l.src, Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// describeAt names what is at pos, for "expected X, found Y" messages.
func (l *lexer) describeAt(pos int) string {
	if pos >= len(l.src) {
		return tokenText[tokEOF]
	}
	r, size := utf8.DecodeRuneInString(l.src[pos:])
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("byte %#x (not UTF-8)", l.src[pos])
	}
	return fmt.Sprintf("%q", r)
}

func (l *lexer) next() (token, error) {
	tok, err := l.scan()
	if err != nil {
		return token{}, err
	}
	l.prev = tok
	return tok, nil
}

func (l *lexer) scan() (token, error) {
	l.skipSpace()
	start := l.pos
	tok := func(k tokenKind, width int) (token, error) {
		l.pos += width
		return token{kind: k, pos: start}, nil
	}
	if l.pos >= len(l.src) {
		return tok(tokEOF, 0)
	}
	rest := l.src[l.pos:]
	switch c := rest[0]; c {
	case '(':
		return tok(tokLParen, 1)
	case ')':
		return tok(tokRParen, 1)
	case '{':
		return tok(tokLBrace, 1)
	case '}':
		return tok(tokRBrace, 1)
	case ',':
		return tok(tokComma, 1)
	case '\'', '"':
		end := strings.IndexByte(rest[1:], c)
		if end < 0 {
			return token{}, l.errorf(start, "unterminated string: no closing %c", c)
		}
		l.pos += end + 2
		return token{kind: tokString, pos: start, val: rest[1 : end+1]}, nil
	case '=':
		if strings.HasPrefix(rest, "==") {
			return tok(tokEq, 2)
		}
		return token{}, l.errorf(start, `expected "==", found a single "="`)
	case '!':
		if strings.HasPrefix(rest, "!=") {
			return tok(tokNe, 2)
		}
		return tok(tokNot, 1)
	case '&':
		if strings.HasPrefix(rest, "&&") {
			return tok(tokAnd, 2)
		}
		return token{}, l.errorf(start, `expected "&&", found a single "&"`)
	case '|':
		if strings.HasPrefix(rest, "||") {
			return tok(tokOr, 2)
		}
		return token{}, l.errorf(start, `expected "||", found a single "|"`)
	case '\n', '\r':
		return token{}, l.errorf(start, "unexpected line break: only spaces and tabs may separate tokens")
	}
	w := l.word()
	switch {
	case w == "":
		return token{}, l.errorf(start, "unexpected %s", l.describeAt(start))
	case l.prev.kind == tokKey:
		return l.operator(start, w)
	case l.pos < len(l.src) && l.src[l.pos] == '(':
		return l.function(start, w)
	}
	if len(w) > MaxKeyLength {
		return token{}, l.errorf(start, "label key is %d bytes long, more than %d", len(w), MaxKeyLength)
	}
	return token{kind: tokKey, pos: start, val: w}, nil
}

// operator turns the word w, read just after a label key, into an operator
// token, reading the second word of "not in", "starts with", "ends with".
func (l *lexer) operator(start int, w string) (token, error) {
	kind, second := tokEOF, ""
	switch w {
	case "contains":
		kind = tokContains
	case "in":
		kind = tokIn
	// Calico also accepts the two-word operators without the space.
	case "notin":
		kind = tokNotIn
	case "startswith":
		kind = tokStartsWith
	case "endswith":
		kind = tokEndsWith
	case "not":
		kind, second = tokNotIn, "in"
	case "starts":
		kind, second = tokStartsWith, "with"
	case "ends":
		kind, second = tokEndsWith, "with"
	default:
		return token{}, l.errorf(start,
			`expected an operator (==, !=, in, not in, contains, starts with, ends with) after %s, found %q`,
			l.prev, w)
	}
	if second != "" {
		l.skipSpace()
		at := l.pos
		if got := l.word(); got != second {
			found := l.describeAt(at)
			if got != "" {
				found = fmt.Sprintf("%q", got)
			}
			return token{}, l.errorf(at, "expected %q after %q, found %s", second, w, found)
		}
	}
	return token{kind: kind, pos: start}, nil
}

// function reads "name(...)"; l.pos is at the "(".
func (l *lexer) function(start int, name string) (token, error) {
	l.pos++ // "("
	l.skipSpace()
	switch name {
	case "has":
		at := l.pos
		key := l.word()
		if key == "" {
			return token{}, l.errorf(at, "expected a label key inside has(), found %s", l.describeAt(at))
		}
		if len(key) > MaxKeyLength {
			return token{}, l.errorf(at, "label key is %d bytes long, more than %d", len(key), MaxKeyLength)
		}
		l.skipSpace()
		if l.pos >= len(l.src) || l.src[l.pos] != ')' {
			return token{}, l.errorf(l.pos, `expected ")" to close "has(" at position %d, found %s`,
				start, l.describeAt(l.pos))
		}
		l.pos++
		return token{kind: tokHas, pos: start, val: key}, nil
	case "all":
		if l.pos >= len(l.src) || l.src[l.pos] != ')' {
			return token{}, l.errorf(l.pos, `expected ")": all() takes no arguments, found %s`,
				l.describeAt(l.pos))
		}
		l.pos++
		return token{kind: tokAll, pos: start}, nil
	case "global":
		return token{}, l.errorf(start, "global() is not supported: it only has meaning in Calico namespace selectors")
	}
	return token{}, l.errorf(start, "unknown function %s(): expected has(key) or all()", name)
}

// parser is a recursive-descent parser over a one-token lookahead.
type parser struct {
	lex   lexer
	tok   token // the lookahead
	depth int   // open parentheses
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) errorf(pos int, format string, args ...any) *SyntaxError {
	return p.lex.errorf(pos, format, args...)
}

// parseOr parses and { "||" and }. after names the token before the
// expression ("&&", "(", ...) for error messages, or is "" at the start.
func (p *parser) parseOr(after string) (node, error) {
	return p.parseList(tokOr, after, func(after string) (node, error) {
		return p.parseList(tokAnd, after, p.parseUnary)
	})
}

// parseList parses operand { sep operand } into one node.
func (p *parser) parseList(sep tokenKind, after string, operand func(after string) (node, error)) (node, error) {
	n, err := operand(after)
	if err != nil {
		return nil, err
	}
	if p.tok.kind != sep {
		return n, nil
	}
	list := boolNode{operands: []node{n}, or: sep == tokOr}
	for p.tok.kind == sep {
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := operand(tokenText[sep])
		if err != nil {
			return nil, err
		}
		list.operands = append(list.operands, n)
	}
	return list, nil
}

// parseUnary parses { "!" } primary.
func (p *parser) parseUnary(after string) (node, error) {
	negated := false
	for p.tok.kind == tokNot {
		negated = !negated
		after = tokenText[tokNot]
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	n, err := p.parsePrimary(after)
	if err != nil {
		return nil, err
	}
	if negated {
		n = negate(n)
	}
	return n, nil
}

func (p *parser) parsePrimary(after string) (node, error) {
	t := p.tok
	switch t.kind {
	case tokHas:
		return hasNode{key: t.val}, p.advance()
	case tokAll:
		return allNode{}, p.advance()
	case tokKey:
		if err := p.advance(); err != nil {
			return nil, err
		}
		return p.parseComparison(t)
	case tokLParen:
		if p.depth >= MaxDepth {
			return nil, p.errorf(t.pos, "parentheses nested more than %d deep", MaxDepth)
		}
		p.depth++
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.parseOr(tokenText[tokLParen])
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tokRParen {
			return nil, p.errorf(p.tok.pos, `expected ")" to close "(" at position %d, found %s`, t.pos, p.tok)
		}
		p.depth--
		return n, p.advance()
	}
	msg := "expected an expression"
	if after != "" {
		msg += " after " + after
	}
	if t.kind != tokEOF || after == "" {
		msg += ", found " + t.String()
	}
	return nil, p.errorf(t.pos, "%s", msg)
}

// parseComparison parses the operator and operand after the label key k.
func (p *parser) parseComparison(k token) (node, error) {
	op := p.tok
	var cop cmpOp
	switch op.kind {
	case tokEq:
		cop = opEq
	case tokNe:
		cop = opNe
	case tokContains:
		cop = opContains
	case tokStartsWith:
		cop = opStartsWith
	case tokEndsWith:
		cop = opEndsWith
	case tokIn, tokNotIn:
		values, err := p.parseSet(op)
		if err != nil {
			return nil, err
		}
		return setNode{key: k.val, values: values, not: op.kind == tokNotIn}, nil
	default:
		msg := fmt.Sprintf("expected an operator (==, !=, in, not in, contains, starts with, ends with) after %s, found %s", k, op)
		if op.kind == tokLParen && (k.val == "has" || k.val == "all" || k.val == "global") {
			msg += fmt.Sprintf(`; write %s( with no space`, k.val)
		}
		return nil, p.errorf(op.pos, "%s", msg)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	v := p.tok
	if v.kind != tokString {
		return nil, p.errorf(v.pos, "expected a quoted string after %s, found %s", op, v)
	}
	return cmpNode{key: k.val, op: cop, value: v.val}, p.advance()
}

// parseSet parses the set literal after "in" or "not in" (the lookahead),
// returning its members sorted and deduplicated.
func (p *parser) parseSet(op token) ([]string, error) {
	if err := p.advance(); err != nil {
		return nil, err
	}
	open := p.tok
	if open.kind != tokLBrace {
		return nil, p.errorf(open.pos, `expected "{" after %s, found %s`, op, open)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	var values []string
	afterMember := false // the last token was a member, so "," or "}" must follow
	for p.tok.kind == tokString {
		values = append(values, p.tok.val)
		if err := p.advance(); err != nil {
			return nil, err
		}
		if afterMember = p.tok.kind != tokComma; afterMember {
			break
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	switch {
	case p.tok.kind == tokRBrace:
	case p.tok.kind == tokEOF:
		return nil, p.errorf(p.tok.pos, `expected "}" to close "{" at position %d`, open.pos)
	case afterMember:
		return nil, p.errorf(p.tok.pos, `expected "," or "}" after a set member, found %s`, p.tok)
	default:
		return nil, p.errorf(p.tok.pos, `expected a quoted string or "}" in set, found %s`, p.tok)
	}
	slices.Sort(values)
	return slices.Compact(values), p.advance()
}
