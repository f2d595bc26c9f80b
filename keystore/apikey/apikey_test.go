package apikey

import (
	"reflect"
	"strings"
	"testing"
)

// TestOnlyWireFields: every field of APIKey, and of the types it holds, is
// one of its wire form, with a JSON name of its own. A field without one
// (embedded, unexported, or tagged "-") would be state that a user of the
// type reads and writes but that no API call carries.
func TestOnlyWireFields(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var check func(reflect.Type)
	check = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[APIKey]().PkgPath() || seen[typ] {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.Anonymous || !f.IsExported() || name == "" || name == "-" {
				t.Errorf("%s.%s (embedded %v, exported %v, json %q) is not a field of the wire form",
					typ.Name(), f.Name, f.Anonymous, f.IsExported(), f.Tag.Get("json"))
				continue
			}
			check(f.Type)
		}
	}
	check(reflect.TypeFor[APIKey]())
	for _, typ := range []reflect.Type{reflect.TypeFor[RateLimit](), reflect.TypeFor[Credits](), reflect.TypeFor[Refill]()} {
		if !seen[typ] {
			t.Errorf("APIKey no longer holds a %s: the check missed it", typ.Name())
		}
	}
}
