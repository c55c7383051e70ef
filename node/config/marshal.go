package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// always are the keys Marshal writes even when they hold their default: the
// ones a reader of a node's file wants to see at a glance.
var always = map[string]bool{"name": true, "role": true, "api.addr": true}

// Marshal writes c as YAML holding only the keys whose value differs from
// Default(), plus name, role and api.addr, in schema order. Fields that are
// not in the file (Dir, Store.EncryptionKey) are never written. The result
// parses back (Parse) to a Config equal to c in every file field.
func Marshal(c Config) ([]byte, error) {
	root, err := diffNode(reflect.ValueOf(c), reflect.ValueOf(Default()), "")
	if err != nil {
		return nil, err
	}
	if root == nil {
		root = &yaml.Node{Kind: yaml.MappingNode}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return buf.Bytes(), nil
}

// diffNode returns a mapping node with the fields of v that differ from
// def (or are listed in always), or nil when there are none.
func diffNode(v, def reflect.Value, prefix string) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || !f.IsExported() {
			continue
		}
		key := prefix + name
		fv, dv := v.Field(i), def.Field(i)
		var val *yaml.Node
		if f.Type.Kind() == reflect.Struct && !implementsMarshaler(f.Type) {
			sub, err := diffNode(fv, dv, key+".")
			if err != nil {
				return nil, err
			}
			val = sub
		} else if always[key] || !sameValue(fv, dv) {
			val = &yaml.Node{}
			if err := val.Encode(fv.Interface()); err != nil {
				return nil, fmt.Errorf("config: %s: %w", key, err)
			}
		}
		if val == nil {
			continue
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, val)
	}
	if len(m.Content) == 0 {
		return nil, nil
	}
	return m, nil
}

// sameValue is deep equality, with an empty list equal to no list.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func implementsMarshaler(t reflect.Type) bool {
	return t.Implements(reflect.TypeOf((*yaml.Marshaler)(nil)).Elem())
}

// Comment turns text into YAML comment lines ("# ..."), one per line, for
// a header above Marshal's output.
func Comment(text string) []byte {
	var b strings.Builder
	for line := range strings.Lines(strings.TrimRight(text, "\n")) {
		line = strings.TrimRight(line, "\n")
		if line == "" {
			b.WriteString("#\n")
			continue
		}
		b.WriteString("# " + line + "\n")
	}
	return []byte(b.String())
}
