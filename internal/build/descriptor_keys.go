package build

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// checkDescriptorKeys reads the JSON in data as a token stream and checks
// what encoding/json does not: that every key of every object is a field
// of the type it decodes into, spelled exactly as its json tag, and given
// once. encoding/json matches field names regardless of case, so without
// this "buildimage" fills BuildImage, and of "buildImage" and "BuildImage"
// the last one wins. Syntax errors are reported here too. Every error says
// where, as "line L, column C" of the key or character at fault.
//
// A value of the wrong kind (a string where a number belongs) is reported
// here too, where its position is known; what only decoding finds (a
// fraction for an integer, a number too large) is json.Unmarshal's.
func checkDescriptorKeys(data []byte) error {
	// A syntax error first, where a full scan places it exactly (the
	// token stream places it at the token before).
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Offset counts the bytes read, the wrong one included.
			return errorAt(data, syn.Offset-1, strings.TrimPrefix(syn.Error(), "json: "))
		}
		return fmt.Errorf("%w: project.json: %v", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := keyWalker{data: data, dec: dec}
	return w.value(reflect.TypeFor[Descriptor](), "")
}

type keyWalker struct {
	data []byte
	dec  *json.Decoder
}

// value checks the next value, which decodes into t; path names it in
// errors ("sidecars[0].env").
func (w *keyWalker) value(t reflect.Type, path string) error {
	start := w.next()
	tok, err := w.token()
	if err != nil {
		return err
	}
	got, want := tokenKind(tok), kindOf(t)
	if got != want && got != "null" { // null leaves a field unset
		msg := jsonKind(got) + " where " + jsonKind(want) + " belongs"
		if path != "" {
			msg = path + ": " + msg
		}
		return errorAt(w.data, start, msg)
	}
	switch got {
	case "object":
		return w.object(t, path)
	case "array":
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := w.token() // ']'
		return err
	}
	return nil
}

// tokenKind names the kind of JSON value tok starts, as kindOf does.
func tokenKind(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '{' {
			return "object"
		}
		return "array"
	case string:
		return "string"
	case bool:
		return "bool"
	case json.Number:
		return "number"
	}
	return "null"
}

// object checks the keys of an object whose '{' was read, decoding into
// struct type t.
func (w *keyWalker) object(t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	seen := map[string]bool{}
	for w.dec.More() {
		start := w.next()
		tok, err := w.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		full := key
		if path != "" {
			full = path + "." + key
		}
		ft, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("unknown field %q", full)
			for name := range fields {
				if strings.EqualFold(name, key) {
					msg += fmt.Sprintf(" (did you mean %q?)", name)
				}
			}
			return errorAt(w.data, start, msg)
		}
		if seen[key] {
			return errorAt(w.data, start, fmt.Sprintf("field %q is given twice", full))
		}
		seen[key] = true
		if err := w.value(ft, full); err != nil {
			return err
		}
	}
	_, err := w.token() // '}'
	return err
}

// token reads one token. The data is valid JSON (checked first), so an
// error here is one of the reader's.
func (w *keyWalker) token() (json.Token, error) {
	tok, err := w.dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: project.json: %v", ErrInvalid, err)
	}
	return tok, nil
}

// next returns the offset of the next token: past white space and the
// comma or colon before it.
func (w *keyWalker) next() int64 {
	off := w.dec.InputOffset()
	for off < int64(len(w.data)) && strings.IndexByte(" \t\r\n,:", w.data[off]) >= 0 {
		off++
	}
	return off
}

// errorAt is an ErrInvalid error about project.json at byte offset off of
// data.
func errorAt(data []byte, off int64, msg string) error {
	return fmt.Errorf("%w: project.json: %s: %s", ErrInvalid, position(data, off), msg)
}

// position tells byte offset off of data as "line L, column C", both from
// 1, the column in bytes.
func position(data []byte, off int64) string {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := off - int64(bytes.LastIndexByte(before, '\n'))
	return "line " + strconv.Itoa(line) + ", column " + strconv.FormatInt(col, 10)
}

// kindOf names the JSON value Go type t takes, as UnmarshalTypeError.Value
// names the one found.
func kindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return "number"
}

// typeMismatch says what a type error of json.Unmarshal found, once the
// walk found the kinds right: a number that does not fit its field.
func typeMismatch(e *json.UnmarshalTypeError) string {
	want := jsonKind(kindOf(e.Type))
	switch e.Type.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		want = "a whole number"
	}
	return e.Field + ": " + strings.TrimPrefix(e.Value, "number ") + " where " + want + " belongs"
}

// jsonKind says a JSON value's kind with its article: "a string".
func jsonKind(kind string) string {
	switch kind {
	case "bool":
		return "true or false"
	case "array", "object":
		return "an " + kind
	case "null":
		return kind
	}
	return "a " + kind
}
