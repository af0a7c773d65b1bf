package ingest

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/decap-ci/decap/internal/build"
)

// decodePush reads the fields of pushEvent from a push payload in one pass
// over its bytes, without reflection, copying only the strings it keeps
// (issue 15: encoding/json scanned the whole 8.8 KB push twice, once to
// validate it and once to decode it).
//
// It accepts and refuses exactly what json.Unmarshal into a pushEvent does,
// and reads the same values (github_diff_test.go holds it to that):
//   - the whole body must be one JSON value (RFC 8259, nested at most
//     10,000 deep), surrounded by nothing but whitespace; a syntax error
//     reads as encoding/json's, word for word;
//   - a field of the wrong type (a number for ref, an object for
//     repository.name, a string for deleted…) is refused, naming the field,
//     but only once the whole body is known to be valid JSON, so that a
//     syntax error wins as it did;
//   - null leaves a field as it is; keys match field names regardless of
//     case (bytes.EqualFold), after unescaping;
//   - a key given twice: the last value wins, and an object given twice is
//     merged into the first, field by field (GitHub never sends duplicate
//     keys; this is encoding/json's rule, kept so that no body reads
//     differently than it did);
//   - invalid UTF-8 and lone surrogates in strings become U+FFFD.
func decodePush(data []byte) (pushEvent, error) {
	var ev pushEvent
	r := pushReader{data: data}
	err := r.top(&ev)
	if err == nil {
		err = r.end()
	}
	if err != nil {
		return pushEvent{}, fmt.Errorf("%w: push payload: %v", build.ErrInvalid, err)
	}
	if r.typeErr != "" {
		return pushEvent{}, fmt.Errorf("%w: push payload: %s", build.ErrInvalid, r.typeErr)
	}
	return ev, nil
}

// maxPushDepth is encoding/json's nesting limit.
const maxPushDepth = 10000

// pushReader is one pass over a payload: pos is the next byte to read, and
// typeErr the first field found of the wrong type (reported only if the
// rest of the body is valid JSON).
type pushReader struct {
	data    []byte
	pos     int
	typeErr string
}

// errEOF is encoding/json's error for a body that ends inside a value.
var errEOF = fmt.Errorf("unexpected end of JSON input")

// syntax is encoding/json's syntax error for byte c met in context.
func syntax(c byte, context string) error {
	var q string
	switch c {
	case '\'':
		q = `'\''`
	case '"':
		q = `'"'`
	default:
		s := strconv.Quote(string(rune(c)))
		q = "'" + s[1:len(s)-1] + "'"
	}
	return fmt.Errorf("invalid character %s %s", q, context)
}

func (r *pushReader) space() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// at is the byte at i, or a space past the end: encoding/json reports a
// body that ends inside a token as that token followed by a space
// ("invalid character ' ' in numeric literal"), and one that ends between
// tokens as errEOF.
func (r *pushReader) at(i int) byte {
	if i < len(r.data) {
		return r.data[i]
	}
	return ' '
}

// peek skips whitespace and returns the next byte; errEOF at the end.
func (r *pushReader) peek() (byte, error) {
	r.space()
	if r.pos >= len(r.data) {
		return 0, errEOF
	}
	return r.data[r.pos], nil
}

// top reads the payload's one value into ev.
func (r *pushReader) top(ev *pushEvent) error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	switch c {
	case '{':
		return r.object(1, func(key []byte) error { return r.pushField(ev, key) })
	case 'n':
		return r.literal("null") // reads as an empty push, refused for its lack of a repository
	}
	return r.mismatch(0, "the payload", "an object")
}

// end refuses anything but whitespace after the top-level value.
func (r *pushReader) end() error {
	r.space()
	if r.pos < len(r.data) {
		return syntax(r.data[r.pos], "after top-level value")
	}
	return nil
}

func (r *pushReader) pushField(ev *pushEvent, key []byte) error {
	switch {
	case fieldIs(key, "ref"):
		return r.str(2, &ev.Ref, "ref")
	case fieldIs(key, "before"):
		return r.str(2, &ev.Before, "before")
	case fieldIs(key, "after"):
		return r.str(2, &ev.After, "after")
	case fieldIs(key, "deleted"):
		return r.boolean(2, &ev.Deleted, "deleted")
	case fieldIs(key, "repository"):
		return r.sub(2, "repository", func(key []byte) error {
			switch {
			case fieldIs(key, "name"):
				return r.str(3, &ev.Repository.Name, "repository.name")
			case fieldIs(key, "owner"):
				return r.sub(3, "repository.owner", func(key []byte) error {
					switch {
					case fieldIs(key, "login"):
						return r.str(4, &ev.Repository.Owner.Login, "repository.owner.login")
					case fieldIs(key, "name"):
						return r.str(4, &ev.Repository.Owner.Name, "repository.owner.name")
					}
					return r.skip(4)
				})
			}
			return r.skip(3)
		})
	case fieldIs(key, "pusher"):
		return r.sub(2, "pusher", func(key []byte) error {
			if fieldIs(key, "name") {
				return r.str(3, &ev.Pusher.Name, "pusher.name")
			}
			return r.skip(3)
		})
	case fieldIs(key, "sender"):
		return r.sub(2, "sender", func(key []byte) error {
			if fieldIs(key, "login") {
				return r.str(3, &ev.Sender.Login, "sender.login")
			}
			return r.skip(3)
		})
	}
	return r.skip(2)
}

// fieldIs reports whether an (unescaped) key names field, as
// encoding/json matches them: exactly or else regardless of case.
func fieldIs(key []byte, field string) bool {
	return string(key) == field || bytes.EqualFold(key, []byte(field))
}

// object reads the object at r.pos, whose own depth is depth, calling
// member for each key with r.pos at its value; member must consume the
// value. The key is only valid during the call.
func (r *pushReader) object(depth int, member func(key []byte) error) error {
	if depth > maxPushDepth {
		return syntax('{', "exceeded max depth")
	}
	r.pos++ // {
	c, err := r.peek()
	if err != nil {
		return err
	}
	if c == '}' {
		r.pos++
		return nil
	}
	for {
		if c != '"' {
			return syntax(c, "looking for beginning of object key string")
		}
		key, err := r.str0(nil)
		if err != nil {
			return err
		}
		if c, err = r.peek(); err != nil {
			return err
		}
		if c != ':' {
			return syntax(c, "after object key")
		}
		r.pos++
		if err := member(key); err != nil {
			return err
		}
		if c, err = r.peek(); err != nil {
			return err
		}
		switch c {
		case '}':
			r.pos++
			return nil
		case ',':
			r.pos++
		default:
			return syntax(c, "after object key:value pair")
		}
		if c, err = r.peek(); err != nil {
			return err
		}
	}
}

// sub reads a field that holds an object: an object is read by member at
// depth, null leaves the field alone, anything else is a type mismatch.
func (r *pushReader) sub(depth int, field string, member func(key []byte) error) error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	switch c {
	case '{':
		return r.object(depth, member)
	case 'n':
		return r.literal("null")
	}
	return r.mismatch(depth-1, field, "an object")
}

// str reads a string field; null leaves it alone.
func (r *pushReader) str(depth int, dst *string, field string) error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	switch c {
	case '"':
		s, err := r.str0(nil)
		if err != nil {
			return err
		}
		*dst = string(s)
		return nil
	case 'n':
		return r.literal("null")
	}
	return r.mismatch(depth-1, field, "a string")
}

// boolean reads a boolean field; null leaves it alone.
func (r *pushReader) boolean(depth int, dst *bool, field string) error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	switch c {
	case 't':
		*dst = true
		return r.literal("true")
	case 'f':
		*dst = false
		return r.literal("false")
	case 'n':
		return r.literal("null")
	}
	return r.mismatch(depth-1, field, "a boolean")
}

// mismatch notes a field whose value is of another JSON type than want,
// and skips the value (which must still be valid JSON). depth is that of
// the field's enclosing object.
func (r *pushReader) mismatch(depth int, field, want string) error {
	var got string
	switch r.data[r.pos] {
	case '{':
		got = "an object"
	case '[':
		got = "an array"
	case '"':
		got = "a string"
	case 't', 'f':
		got = "a boolean"
	default:
		got = "a number" // or not JSON at all: skip says which
	}
	if err := r.skip(depth + 1); err != nil {
		return err
	}
	if r.typeErr == "" {
		r.typeErr = fmt.Sprintf("%s is %s, not %s", field, got, want)
	}
	return nil
}

// literal reads true, false or null, starting at r.pos.
func (r *pushReader) literal(word string) error {
	r.pos++
	for i := 1; i < len(word); i++ {
		if c := r.at(r.pos); c != word[i] {
			return syntax(c, fmt.Sprintf("in literal %s (expecting %s)", word, strconv.QuoteRune(rune(word[i]))))
		}
		r.pos++
	}
	return nil
}

// skip checks and steps over the value at r.pos (after whitespace). depth
// is the depth the value has if it is an object or an array. Nested
// containers are tracked on a stack of their opening bytes, not by
// recursion.
func (r *pushReader) skip(depth int) error {
	var arr [32]byte
	open := arr[:0]
	for {
		// A value.
		c, err := r.peek()
		if err != nil {
			return err
		}
		switch {
		case c == '{' || c == '[':
			if depth+len(open) > maxPushDepth {
				return syntax(c, "exceeded max depth")
			}
			open = append(open, c)
			r.pos++
			if c, err = r.peek(); err != nil {
				return err
			}
			if c == '}' && open[len(open)-1] == '{' || c == ']' && open[len(open)-1] == '[' {
				r.pos++
				open = open[:len(open)-1]
			} else if open[len(open)-1] == '{' {
				if err := r.key(c); err != nil {
					return err
				}
				continue
			} else {
				continue
			}
		case c == '"':
			if _, err := r.str0(nil); err != nil {
				return err
			}
		case c == '-' || '0' <= c && c <= '9':
			if err := r.number(); err != nil {
				return err
			}
		case c == 't':
			err = r.literal("true")
		case c == 'f':
			err = r.literal("false")
		case c == 'n':
			err = r.literal("null")
		default:
			return syntax(c, "looking for beginning of value")
		}
		if err != nil {
			return err
		}
		// After a value: close containers until one goes on.
		for {
			if len(open) == 0 {
				return nil
			}
			if c, err = r.peek(); err != nil {
				return err
			}
			inObject := open[len(open)-1] == '{'
			switch {
			case c == ',':
				r.pos++
				if inObject {
					if c, err = r.peek(); err != nil {
						return err
					}
					if err := r.key(c); err != nil {
						return err
					}
				}
			case inObject && c == '}', !inObject && c == ']':
				r.pos++
				open = open[:len(open)-1]
				continue
			case inObject:
				return syntax(c, "after object key:value pair")
			default:
				return syntax(c, "after array element")
			}
			break
		}
	}
}

// key steps over an object key and its colon; c is the byte at r.pos.
func (r *pushReader) key(c byte) error {
	if c != '"' {
		return syntax(c, "looking for beginning of object key string")
	}
	if _, err := r.str0(nil); err != nil {
		return err
	}
	c, err := r.peek()
	if err != nil {
		return err
	}
	if c != ':' {
		return syntax(c, "after object key")
	}
	r.pos++
	return nil
}

// number steps over a number, as RFC 8259 writes them.
func (r *pushReader) number() error {
	d := r.data
	i := r.pos
	if d[i] == '-' {
		i++
		if c := r.at(i); c < '0' || c > '9' {
			return syntax(c, "in numeric literal")
		}
	}
	if d[i] == '0' {
		i++
	} else {
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && d[i] == '.' {
		i++
		if c := r.at(i); c < '0' || c > '9' {
			return syntax(c, "after decimal point in numeric literal")
		}
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if c := r.at(i); c < '0' || c > '9' {
			return syntax(c, "in exponent of numeric literal")
		}
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	r.pos = i
	return nil
}

// str0 reads the string at r.pos (its opening quote) and returns its
// value: a slice of the payload when it holds no escape and no invalid
// UTF-8, else unquoted into buf (appended to, then grown as needed).
// Escapes are unquoted as encoding/json does, lone surrogates and invalid
// UTF-8 becoming U+FFFD.
func (r *pushReader) str0(buf []byte) ([]byte, error) {
	d := r.data
	start := r.pos + 1
	i := start
	for i < len(d) {
		for i < len(d) && plainASCII[d[i]] == '1' {
			i++
		}
		if i >= len(d) {
			break
		}
		c := d[i]
		if c == '"' {
			r.pos = i + 1
			return d[start:i], nil
		}
		if c < utf8.RuneSelf {
			break // \ or a control character
		}
		rr, size := utf8.DecodeRune(d[i:])
		if rr == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	b := append(buf, d[start:i]...)
	for {
		if i >= len(d) {
			return nil, errEOF
		}
		switch c := d[i]; {
		case c == '"':
			r.pos = i + 1
			return b, nil
		case c < ' ':
			return nil, syntax(c, "in string literal")
		case c == '\\':
			i++
			switch e := r.at(i); e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr, err := r.hex4(i + 1)
				if err != nil {
					return nil, err
				}
				i += 4
				if utf16.IsSurrogate(rr) {
					// A pair only if another \u escape follows at once and
					// completes it; else U+FFFD, and what follows is read
					// on its own.
					if i+2 < len(d) && d[i+1] == '\\' && d[i+2] == 'u' {
						rr1, err := r.hex4(i + 3)
						if err != nil {
							return nil, err
						}
						if dec := utf16.DecodeRune(rr, rr1); dec != utf8.RuneError {
							rr = dec
							i += 6
						} else {
							rr = utf8.RuneError
						}
					} else {
						rr = utf8.RuneError
					}
				}
				b = utf8.AppendRune(b, rr)
			default:
				return nil, syntax(e, "in string escape code")
			}
			i++
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			rr, size := utf8.DecodeRune(d[i:])
			b = utf8.AppendRune(b, rr)
			i += size
		}
	}
}

// plainASCII says, for each byte, whether a string holds it as it is
// ('1'): printable ASCII but the quote and the backslash. A byte 0x80 or
// above is checked as UTF-8.
const plainASCII = "00000000000000000000000000000000" +
	"11011111111111111111111111111111" +
	"11111111111111111111111111110111" +
	"11111111111111111111111111111111" +
	"00000000000000000000000000000000" +
	"00000000000000000000000000000000" +
	"00000000000000000000000000000000" +
	"00000000000000000000000000000000"

// hex4 reads the four hex digits of a \u escape at r.data[i:].
func (r *pushReader) hex4(i int) (rune, error) {
	var rr rune
	for j := i; j < i+4; j++ {
		c := r.at(j)
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, syntax(c, `in \u hexadecimal character escape`)
		}
		rr = rr*16 + rune(c)
	}
	return rr, nil
}
