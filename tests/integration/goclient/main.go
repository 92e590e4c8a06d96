// SPDX-License-Identifier: MIT
//
// goclient: halyard's interop probe built on an independent varlink
// implementation, github.com/varlink/go (Debian: golang-github-varlink-go-dev).
//
//	goclient client ADDRESS   talk to a halyard server (testd), print one JSON
//	                          object per step on stdout
//	goclient serve ADDRESS    serve org.example.goserver with the Go library's
//	                          varlink.Service, so halyardctl can be pointed at a
//	                          third-party server
//	goclient serve-no-url ADDRESS   the same with an empty URL
//
// ADDRESS is "unix:/path". Build offline in GOPATH mode (no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o goclient main.go
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/varlink/go/varlink"
	"github.com/varlink/go/varlink/idl"
)

// ---- client ---------------------------------------------------------------

func emit(v map[string]interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "marshal: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(b))
}

// describeError turns a varlink error reply (as the library dispatches it)
// into its name and parameters.
func describeError(err error) map[string]interface{} {
	out := map[string]interface{}{"error": err.Error()}
	var inf *varlink.InterfaceNotFound
	var mnf *varlink.MethodNotFound
	var mni *varlink.MethodNotImplemented
	var inv *varlink.InvalidParameter
	var gen *varlink.Error
	switch {
	case errors.As(err, &inf):
		out["parameters"] = map[string]interface{}{"interface": inf.Interface}
	case errors.As(err, &mnf):
		out["parameters"] = map[string]interface{}{"method": mnf.Method}
	case errors.As(err, &mni):
		out["parameters"] = map[string]interface{}{"method": mni.Method}
	case errors.As(err, &inv):
		out["parameters"] = map[string]interface{}{"parameter": inv.Parameter}
	case errors.As(err, &gen):
		out["error"] = gen.Name
		if raw, ok := gen.Parameters.(*json.RawMessage); ok && raw != nil {
			var p interface{}
			if json.Unmarshal(*raw, &p) == nil {
				out["parameters"] = p
			}
		}
	default:
		out["local"] = true
	}
	return out
}

func typeKindName(k idl.TypeKind) string {
	names := map[idl.TypeKind]string{
		idl.TypeBool: "bool", idl.TypeInt: "int", idl.TypeFloat: "float", idl.TypeString: "string",
		idl.TypeObject: "object", idl.TypeArray: "array", idl.TypeMaybe: "maybe", idl.TypeMap: "map",
		idl.TypeStruct: "struct", idl.TypeEnum: "enum", idl.TypeAlias: "alias",
	}
	if n, ok := names[k]; ok {
		return n
	}
	return "?"
}

func fieldsOf(t *idl.Type) map[string]string {
	out := map[string]string{}
	if t == nil {
		return out
	}
	for _, f := range t.Fields {
		if f.Type == nil {
			out[f.Name] = "enum-value"
		} else {
			out[f.Name] = typeKindName(f.Type.Kind)
		}
	}
	return out
}

func runClient(address string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := varlink.NewConnection(ctx, address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "connect %s: %v\n", address, err)
		return 1
	}
	defer c.Close()

	// GetInfo (the library sends "parameters": null here).
	var vendor, product, version, url string
	var ifaces []string
	if err := c.GetInfo(ctx, &vendor, &product, &version, &url, &ifaces); err != nil {
		emit(map[string]interface{}{"step": "info", "failed": describeError(err)})
		return 1
	}
	emit(map[string]interface{}{"step": "info", "vendor": vendor, "product": product, "version": version,
		"url": url, "interfaces": ifaces})

	// Every interface's description, parsed with the library's IDL parser.
	sorted := append([]string(nil), ifaces...)
	sort.Strings(sorted)
	for _, name := range sorted {
		desc, err := c.GetInterfaceDescription(ctx, name)
		if err != nil {
			emit(map[string]interface{}{"step": "describe", "interface": name, "failed": describeError(err)})
			continue
		}
		parsed, perr := idl.New(desc)
		lowercased := false
		if perr != nil && name != strings.ToLower(name) {
			// This library's parser predates upper-case letters in
			// interface names (its regexp is ^[a-z]+(\.[a-z0-9]+...)+),
			// which varlink.org's grammar and systemd (io.systemd.Manager)
			// allow. Retry with the name lower-cased to check the rest.
			parsed, perr = idl.New(strings.Replace(desc, "interface "+name, "interface "+strings.ToLower(name), 1))
			lowercased = perr == nil
			if perr != nil {
				perr = fmt.Errorf("%v (also with the name lower-cased)", perr)
			}
		}
		if perr != nil {
			emit(map[string]interface{}{"step": "describe", "interface": name, "description": desc,
				"parseError": perr.Error()})
			continue
		}
		methods := map[string]interface{}{}
		for _, m := range parsed.Methods {
			methods[m.Name] = map[string]interface{}{"in": fieldsOf(m.In), "out": fieldsOf(m.Out)}
		}
		errs := []string{}
		for _, e := range parsed.Errors {
			errs = append(errs, e.Name)
		}
		aliases := []string{}
		for _, a := range parsed.Aliases {
			aliases = append(aliases, a.Name)
		}
		emit(map[string]interface{}{"step": "describe", "interface": name, "name": parsed.Name,
			"description": desc, "methods": methods, "errors": errs, "types": aliases,
			"parsedLowercased": lowercased})
	}

	// GetInterfaceDescription of an interface the server does not have.
	if _, err := c.GetInterfaceDescription(ctx, "org.example.nothere"); err != nil {
		emit(map[string]interface{}{"step": "describe-unknown", "failed": describeError(err)})
	} else {
		emit(map[string]interface{}{"step": "describe-unknown", "failed": nil})
	}

	// Echo.
	var echo struct {
		Text string `json:"text"`
	}
	if err := c.Call(ctx, "io.halyard.Test.Echo", map[string]interface{}{"text": "grüße \u2603 \"quoted\" \\ /"}, &echo); err != nil {
		emit(map[string]interface{}{"step": "echo", "failed": describeError(err)})
	} else {
		emit(map[string]interface{}{"step": "echo", "text": echo.Text})
	}

	// Stream with more: read until a reply comes without continues.
	recv, err := c.Send(ctx, "io.halyard.Test.Stream", map[string]interface{}{"count": 4}, varlink.More)
	if err != nil {
		emit(map[string]interface{}{"step": "stream", "failed": describeError(err)})
	} else {
		indexes := []int64{}
		continues := []bool{}
		for i := 0; i < 100; i++ {
			var r struct {
				Index int64 `json:"index"`
			}
			flags, err := recv(ctx, &r)
			if err != nil {
				emit(map[string]interface{}{"step": "stream", "failed": describeError(err)})
				break
			}
			indexes = append(indexes, r.Index)
			continues = append(continues, flags&varlink.Continues != 0)
			if flags&varlink.Continues == 0 {
				emit(map[string]interface{}{"step": "stream", "indexes": indexes, "continues": continues})
				break
			}
		}
	}

	// Stream without more: the server must refuse (ExpectedMore).
	var dummy struct{}
	err = c.Call(ctx, "io.halyard.Test.Stream", map[string]interface{}{"count": 2}, &dummy)
	emit(map[string]interface{}{"step": "stream-without-more", "failed": errOrNil(err)})

	// Oneway, then a normal call: the next reply on the wire must be the Echo's.
	if _, err := c.Send(ctx, "io.halyard.Test.Echo", map[string]interface{}{"text": "oneway"}, varlink.Oneway); err != nil {
		emit(map[string]interface{}{"step": "oneway", "failed": describeError(err)})
	} else {
		var r struct {
			Text string `json:"text"`
		}
		err := c.Call(ctx, "io.halyard.Test.Echo", map[string]interface{}{"text": "after-oneway"}, &r)
		emit(map[string]interface{}{"step": "oneway", "next": r.Text, "failed": errOrNil(err)})
	}

	// An unknown method, a missing parameter.
	err = c.Call(ctx, "io.halyard.Test.DoesNotExist", map[string]interface{}{}, &dummy)
	emit(map[string]interface{}{"step": "unknown-method", "failed": errOrNil(err)})
	err = c.Call(ctx, "io.halyard.Test.Echo", map[string]interface{}{}, &dummy)
	emit(map[string]interface{}{"step": "missing-parameter", "failed": errOrNil(err)})

	// The connection is still usable after all of that.
	var st struct {
		Greeting string `json:"greeting"`
		Calls    int64  `json:"calls"`
	}
	err = c.Call(ctx, "io.halyard.Test.GetStatus", nil, &st)
	emit(map[string]interface{}{"step": "status", "greeting": st.Greeting, "calls": st.Calls, "failed": errOrNil(err)})
	return 0
}

func errOrNil(err error) interface{} {
	if err == nil {
		return nil
	}
	return describeError(err)
}

// ---- server ---------------------------------------------------------------

const goServerIDL = `# A third-party interface served by the Go varlink library.
interface org.example.goserver

type Item (name: string, size: int)

# Returns its argument.
method Echo(text: string) -> (text: string)

# Replies n times (needs "more"), all but the last with continues.
method Count(n: int) -> (i: int, item: Item)

# Always fails with Broken.
method Fail() -> ()

error Broken (reason: string)

error WantsMore ()
`

type goServer struct{}

func (goServer) VarlinkGetName() string        { return "org.example.goserver" }
func (goServer) VarlinkGetDescription() string { return goServerIDL }

func (goServer) VarlinkDispatch(ctx context.Context, c varlink.Call, method string) error {
	switch method {
	case "Echo":
		var in struct {
			Text *string `json:"text"`
		}
		if err := c.GetParameters(&in); err != nil || in.Text == nil {
			return c.ReplyInvalidParameter(ctx, "text")
		}
		return c.Reply(ctx, map[string]interface{}{"text": *in.Text})
	case "Count":
		var in struct {
			N *int64 `json:"n"`
		}
		if err := c.GetParameters(&in); err != nil || in.N == nil || *in.N < 1 || *in.N > 1000 {
			return c.ReplyInvalidParameter(ctx, "n")
		}
		if !c.WantsMore() {
			return c.ReplyError(ctx, "org.example.goserver.WantsMore", map[string]interface{}{})
		}
		for i := int64(0); i < *in.N; i++ {
			c.Continues = i+1 < *in.N
			item := map[string]interface{}{"name": fmt.Sprintf("item%d", i), "size": i * 10}
			if err := c.Reply(ctx, map[string]interface{}{"i": i, "item": item}); err != nil {
				return err
			}
		}
		return nil
	case "Fail":
		return c.ReplyError(ctx, "org.example.goserver.Broken", map[string]interface{}{"reason": "on purpose"})
	default:
		return c.ReplyMethodNotFound(ctx, "org.example.goserver."+method)
	}
}

func runServer(address string, url string) int {
	svc, err := varlink.NewService("Example Go Vendor", "goclient-server", "7.1", url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "NewService: %v\n", err)
		return 1
	}
	if err := svc.RegisterInterface(goServer{}); err != nil {
		fmt.Fprintf(os.Stderr, "RegisterInterface: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := svc.Bind(ctx, address); err != nil {
		fmt.Fprintf(os.Stderr, "Bind %s: %v\n", address, err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		_ = svc.Shutdown()
	}()
	fmt.Println("READY")
	if err := svc.DoListen(ctx, 0); err != nil {
		fmt.Fprintf(os.Stderr, "DoListen: %v\n", err)
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintf(os.Stderr, "Usage: %s client|serve|serve-no-url unix:/path\n", os.Args[0])
		os.Exit(2)
	}
	switch os.Args[1] {
	case "client":
		os.Exit(runClient(os.Args[2]))
	case "serve":
		os.Exit(runServer(os.Args[2], "https://example.org/goserver"))
	case "serve-no-url":
		// An empty URL: the library's GetInfo reply then has no "url"
		// at all (omitempty), as many real services' replies do.
		os.Exit(runServer(os.Args[2], ""))
	}
	fmt.Fprintf(os.Stderr, "Unknown mode %s\n", os.Args[1])
	os.Exit(2)
}
