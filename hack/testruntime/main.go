// Command testruntime is the function runtime of ol-shim's test image: a
// static binary, the only file of an image FROM scratch. It serves HTTP on
// the unix socket /host/ol.sock (OpenLambda's convention) and answers every
// request with "ok <hostname>\n". It exits 0 on SIGTERM or SIGINT.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sock := "/host/ol.sock"
	if len(os.Args) > 1 {
		sock = os.Args[1]
	}
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatalf("testruntime: %v", err)
	}
	host, _ := os.Hostname()
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		l.Close()
		os.Exit(0)
	}()
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %s\n", host)
	}))
	log.Fatalf("testruntime: %v", err)
}
