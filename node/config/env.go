package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "STRATA_"

// ApplyEnv overrides fields from the environment. Each YAML key has a
// variable named STRATA_ and its path in upper case joined by "_":
// api.addr is STRATA_API_ADDR, store.cache_mb is STRATA_STORE_CACHE_MB.
// STRATA_STORE_ENCRYPTION_KEY sets the encryption key (hex) directly.
// Lists (store.read_dsns) have no variable: a variable set for one is an
// error, since no separator is safe inside every DSN.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	if v, ok := lookup(EnvPrefix + "STORE_ENCRYPTION_KEY"); ok {
		c.Store.EncryptionKey = v
	}
	if v, ok := lookup(EnvPrefix + "OBJECTS_SECRET_KEY"); ok {
		c.Objects.SecretKey = v
	}
	return walkEnv(reflect.ValueOf(c).Elem(), EnvPrefix, lookup)
}

// EnvNames lists every override variable, for docs and --help.
func EnvNames() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+strings.ToUpper(name)+"_")
				continue
			}
			if f.Type.Kind() == reflect.Slice || f.Type.Kind() == reflect.Map {
				continue
			}
			out = append(out, prefix+strings.ToUpper(name))
		}
	}
	walk(reflect.TypeOf(Config{}), EnvPrefix)
	return append(out, EnvPrefix+"STORE_ENCRYPTION_KEY", EnvPrefix+"OBJECTS_SECRET_KEY")
}

func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return ""
	}
	return name
}

func walkEnv(v reflect.Value, prefix string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		key := prefix + strings.ToUpper(name)
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := walkEnv(fv, key+"_", lookup); err != nil {
				return err
			}
			continue
		}
		s, ok := lookup(key)
		if !ok {
			continue
		}
		if err := setFromString(fv, s); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return nil
}

func setFromString(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetUint(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Slice, reflect.Map:
		return fmt.Errorf("a list or map cannot be set from the environment; set it in the file")
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
