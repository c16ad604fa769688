package clicmd

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/template"

	"github.com/urfave/cli/v2"
)

// formatFlag is --format of list commands, as docker's: table (the
// default), json, or a Go template applied to each item.
var formatFlag = &cli.StringFlag{Name: "format", Usage: "table (the default), json, or a Go template applied to each item, as docker's (e.g. '{{.Name}} {{.Stats.Idle}}')"}

// outputFormat is the command's --format, its hidden --json counting as
// json.
func outputFormat(c *cli.Context) (string, error) {
	f := c.String("format")
	if c.Bool("json") {
		if f != "" && f != "json" {
			return "", usageError("--json and --format %q: give one", f)
		}
		f = "json"
	}
	if f == "" {
		f = "table"
	}
	return f, nil
}

// printFormatted writes items (a slice) as json or through a Go template
// (one line per item where each is true). The template has docker's json
// function: {{json .Config}}.
func printFormatted(w io.Writer, format string, items any, each bool) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		if !each {
			enc.SetIndent("", "    ")
		}
		return enc.Encode(items)
	}
	tmpl, err := template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(format)
	if err != nil {
		return usageError("--format %q: %v", format, err)
	}
	v := reflect.ValueOf(items)
	for i := range v.Len() {
		var b strings.Builder
		if err := tmpl.Execute(&b, v.Index(i).Interface()); err != nil {
			return fmt.Errorf("--format %q: %w", format, err)
		}
		fmt.Fprintln(w, b.String())
	}
	return nil
}
