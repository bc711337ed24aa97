package config

import (
	"fmt"
	"reflect"
	"strconv"
)

// Get returns key's values in text form, as Set takes them: one value,
// or a list's elements.
func (c Config) Get(key string) ([]string, error) {
	var field reflect.Value
	walk(reflect.ValueOf(&c).Elem(), "", func(k string, f reflect.Value) {
		if k == key {
			field = f
		}
	})
	if !field.IsValid() {
		return nil, fmt.Errorf("config: %w: %s", ErrUnknownKey, key)
	}
	switch field.Kind() {
	case reflect.String:
		return []string{field.String()}, nil
	case reflect.Bool:
		return []string{strconv.FormatBool(field.Bool())}, nil
	case reflect.Int:
		return []string{strconv.FormatInt(field.Int(), 10)}, nil
	case reflect.Slice:
		out := make([]string, field.Len())
		for i := range out {
			out[i] = field.Index(i).String()
		}
		return out, nil
	}
	panic("config: unhandled kind " + field.Kind().String()) // a key of a new type
}

// KeyType is the kind of value key holds, in the words of Tor's
// config/names: String, Boolean, Integer or LineList ("" for no such key).
func KeyType(key string) string {
	t := ""
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(k string, f reflect.Value) {
		if k != key {
			return
		}
		switch f.Kind() {
		case reflect.String:
			t = "String"
		case reflect.Bool:
			t = "Boolean"
		case reflect.Int:
			t = "Integer"
		case reflect.Slice:
			t = "LineList"
		}
	})
	return t
}
