package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// object is a JSON object that keeps its keys in order: inspect output
// lists a message's fields in the order the proto declares them, as docker
// lists its structs' fields, rather than sorted.
type object []member

type member struct {
	key   string
	value any
}

// MarshalJSON writes the members in order.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(m.value)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", m.key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// document converts a message into what inspect prints, in docker's
// style rather than protojson's: fields named as Go names them in docker
// (ID, ServiceID, NanoCPUs), enums as short lowercase words ("drain",
// "running", "on-failure"), and times as RFC 3339 strings. Scalars are
// always present, so that templates such as {{.Spec.Availability}} work
// for zero values too; unset messages and empty lists are left out.
func document(m proto.Message) object {
	return messageDoc(m.ProtoReflect())
}

func messageDoc(m protoreflect.Message) object {
	fields := m.Descriptor().Fields()
	out := make(object, 0, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) && (fd.Message() != nil && !fd.IsMap() || fd.IsList() || fd.ContainingOneof() != nil) {
			continue
		}
		out = append(out, member{key: goName(string(fd.Name())), value: fieldDoc(fd, m.Get(fd))})
	}
	return out
}

func fieldDoc(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch {
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range l.Len() {
			out[i] = scalarDoc(fd, l.Get(i))
		}
		return out
	case fd.IsMap():
		mp := v.Map()
		keys := make([]string, 0, mp.Len())
		mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
			keys = append(keys, k.String())
			return true
		})
		sort.Strings(keys)
		out := make(object, 0, len(keys))
		for _, k := range keys {
			out = append(out, member{key: k, value: scalarDoc(fd.MapValue(), mp.Get(protoreflect.ValueOfString(k).MapKey()))})
		}
		return out
	default:
		return scalarDoc(fd, v)
	}
}

func scalarDoc(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageDoc(v.Message())
	case protoreflect.EnumKind:
		return enumWord(fieldEnum{desc: fd.Enum(), num: v.Enum()})
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if isTimeField(fd) {
			return time.Unix(0, v.Int()).UTC().Format(time.RFC3339Nano)
		}
		return v.Int()
	case protoreflect.BytesKind:
		return v.Bytes()
	default:
		return v.Interface()
	}
}

// isTimeField reports whether a field holds Unix nanoseconds (the proto's
// convention for times: created_at, timestamp, ...).
func isTimeField(fd protoreflect.FieldDescriptor) bool {
	name := string(fd.Name())
	return strings.HasSuffix(name, "_at") || name == "timestamp"
}

// goName turns a proto field name into docker's Go-style one.
func goName(snake string) string {
	parts := strings.Split(snake, "_")
	for i, p := range parts {
		switch p {
		case "id", "ip", "api", "vni", "os", "oom", "tty", "dns":
			parts[i] = strings.ToUpper(p)
		case "ids", "vips", "cpus":
			parts[i] = strings.ToUpper(p[:len(p)-1]) + "s"
		default:
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "")
}

// fieldEnum is an enum field's value as reflection gives it: a number
// apart from its descriptor, which enumWord needs together.
type fieldEnum struct {
	desc protoreflect.EnumDescriptor
	num  protoreflect.EnumNumber
}

// Descriptor is the field's enum type, whose value names enumWord reads.
func (e fieldEnum) Descriptor() protoreflect.EnumDescriptor { return e.desc }

// Number is the field's value.
func (e fieldEnum) Number() protoreflect.EnumNumber { return e.num }

// templateData is an object as --format templates see it: plain maps, so
// that {{.Spec.Name}} looks up keys.
func templateData(v any) any {
	switch t := v.(type) {
	case object:
		m := make(map[string]any, len(t))
		for _, mb := range t {
			m[mb.key] = templateData(mb.value)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = templateData(e)
		}
		return out
	default:
		return v
	}
}

// printInspect writes messages as docker's inspect does: an indented JSON
// array, or with a template, one execution per object.
func printInspect[M proto.Message](w io.Writer, format string, msgs []M) error {
	docs := make([]object, len(msgs))
	for i, m := range msgs {
		docs[i] = document(m)
	}
	if format == "" || format == "json" {
		b, err := json.MarshalIndent(docs, "", "    ")
		if err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, text := splitTableFormat(format)
	tmpl, err := parseTemplate(text)
	if err != nil {
		return err
	}
	for _, d := range docs {
		if err := tmpl.Execute(w, templateData(d)); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(w)
	}
	return nil
}
