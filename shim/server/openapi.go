package server

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// The API's reference, api/openapi.yaml, is made from the route table
// (routeTable) and the Go types of the bodies (apiSchemas) by OpenAPI, so
// that it cannot drift from the server: `go run ./hack/openapi` writes it,
// and TestOpenAPIUpToDate fails when the committed file is not what the
// code makes.

// route is one endpoint of /v1: its handler and what the reference says.
type route struct {
	method, path string
	h            func(*Server, http.ResponseWriter, *http.Request)
	summary      string
	request      string // the body's schema ("" none)
	response     string // the 200 answer's schema ("" 204, no body; "[]X" a list of X)
}

// apiSchemas are the bodies' types, by their schema names.
var apiSchemas = map[string]any{
	"AcquireRequest": api.AcquireRequest{}, "Lease": api.Lease{}, "DestroyRequest": api.DestroyRequest{}, "RenewRequest": api.RenewRequest{},
	"PoolConfig": spec.PoolConfig{}, "PoolStatus": api.PoolStatus{}, "CountRequest": api.CountRequest{},
	"RunCall": api.RunCall{}, "RunResult": api.RunResult{}, "GrowRequest": api.GrowRequest{}, "VolumeStatus": api.VolumeStatus{},
	"RuntimeCheckRequest": api.RuntimeCheckRequest{}, "RuntimeCheck": api.RuntimeCheck{},
	"StatusResponse": api.StatusResponse{}, "HealthResponse": api.HealthResponse{}, "ErrorBody": api.ErrorBody{},
}

// OpenAPI returns the API's reference as OpenAPI 3.0 YAML.
func OpenAPI(version string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Made by go run ./hack/openapi from shim/server's route table and the
# API's Go types; TestOpenAPIUpToDate checks it. Do not edit by hand.
openapi: 3.0.3
info:
  title: ol-shim API
  version: %q
  description: >-
    The API of ol-shimd: on its unix socket (/run/ol-shim/ol-shim.sock; the
    caller is known by its uid, root may act on everything) and, where
    configured, over mutual TLS (the caller is its certificate's subject).
    Errors answer with an ErrorBody and the status of their class (400 bad
    input, 403 not allowed, 404 not found or another caller's, 409
    conflict, 429/503 no room or not ready, 504 timed out). POST /v1/run
    with "Connection: Upgrade" and "Upgrade: ol-shim-run/1" streams the run
    on the connection (see shim/agent).
servers:
  - url: http://ol-shim
paths:
`, version)
	paths := map[string][]route{}
	var order []string
	for _, rt := range routeTable {
		if _, ok := paths[rt.path]; !ok {
			order = append(order, rt.path)
		}
		paths[rt.path] = append(paths[rt.path], rt)
	}
	for _, p := range order {
		fmt.Fprintf(&b, "  %s:\n", p)
		for _, rt := range paths[p] {
			fmt.Fprintf(&b, "    %s:\n      summary: %q\n", strings.ToLower(rt.method), rt.summary)
			var params []string
			for _, seg := range strings.Split(rt.path, "/") {
				if strings.HasPrefix(seg, "{") {
					params = append(params, strings.Trim(seg, "{}"))
				}
			}
			if len(params) > 0 {
				b.WriteString("      parameters:\n")
				for _, n := range params {
					fmt.Fprintf(&b, "        - {name: %s, in: path, required: true, schema: {type: string}}\n", n)
				}
			}
			if rt.request != "" {
				fmt.Fprintf(&b, "      requestBody:\n        required: true\n        content:\n          application/json:\n            schema: {$ref: '#/components/schemas/%s'}\n", rt.request)
			}
			b.WriteString("      responses:\n")
			if rt.response == "" {
				b.WriteString("        '204': {description: done}\n")
			} else if item, ok := strings.CutPrefix(rt.response, "[]"); ok {
				fmt.Fprintf(&b, "        '200':\n          description: done\n          content:\n            application/json:\n              schema: {type: array, items: {$ref: '#/components/schemas/%s'}}\n", item)
			} else {
				fmt.Fprintf(&b, "        '200':\n          description: done\n          content:\n            application/json:\n              schema: {$ref: '#/components/schemas/%s'}\n", rt.response)
			}
			b.WriteString("        default:\n          description: an error\n          content:\n            application/json:\n              schema: {$ref: '#/components/schemas/ErrorBody'}\n")
		}
	}
	b.WriteString("components:\n  schemas:\n")
	done := map[string]bool{}
	names := make([]string, 0, len(apiSchemas))
	for n := range apiSchemas {
		names = append(names, n)
	}
	slices.Sort(names)
	var queue []reflect.Type
	typeName := map[reflect.Type]string{}
	for _, n := range names {
		t := reflect.TypeOf(apiSchemas[n])
		typeName[t] = n
		queue = append(queue, t)
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		n := typeName[t]
		if done[n] {
			continue
		}
		done[n] = true
		fmt.Fprintf(&b, "    %s:\n      type: object\n      properties:\n", n)
		for _, f := range jsonFields(t) {
			fmt.Fprintf(&b, "        %s: %s\n", f.name, schemaOf(f.typ, typeName, &queue))
		}
	}
	return b.String()
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields returns t's fields as encoding/json names them, embedded
// structs' included.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name, f.Type})
	}
	return out
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	timeType     = reflect.TypeOf(time.Time{})
)

// schemaOf is t's schema, inline; a struct is a component of its own,
// named by the API's schema name or its Go name.
func schemaOf(t reflect.Type, names map[reflect.Type]string, queue *[]reflect.Type) string {
	if m, ok := reflect.New(t).Interface().(interface{ MarshalText() ([]byte, error) }); ok && m != nil && t != timeType {
		return "{type: string}"
	}
	switch {
	case t == timeType:
		return "{type: string, format: date-time}"
	case t == durationType:
		return "{type: integer, format: int64, description: nanoseconds}"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem(), names, queue)
	case reflect.String:
		return "{type: string}"
	case reflect.Bool:
		return "{type: boolean}"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "{type: integer}"
	case reflect.Float32, reflect.Float64:
		return "{type: number}"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "{type: string, format: byte}"
		}
		return "{type: array, items: " + schemaOf(t.Elem(), names, queue) + "}"
	case reflect.Map:
		return "{type: object, additionalProperties: " + schemaOf(t.Elem(), names, queue) + "}"
	case reflect.Struct:
		n, ok := names[t]
		if !ok {
			n = t.Name()
			names[t] = n
		}
		*queue = append(*queue, t)
		return "{$ref: '#/components/schemas/" + n + "'}"
	}
	return "{}"
}
