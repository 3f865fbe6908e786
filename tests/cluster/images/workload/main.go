// workload is the test workload of tests/cluster: a static binary with no shell around it.
//
//	workload serve                 print "workload running" and wait for SIGTERM
//	workload post-audit URL        POST an empty EventList to URL (a wasmgate /audit endpoint)
//	                               over TLS without a client certificate, trusting the CA in
//	                               $CA_FILE, and print "status=<code>" or "error=<message>"
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: workload serve | post-audit URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		fmt.Println("workload running")
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		fmt.Println("workload stopping")
	case "post-audit":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: workload post-audit URL")
			os.Exit(2)
		}
		os.Exit(postAudit(os.Args[2]))
	default:
		fmt.Fprintf(os.Stderr, "workload: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func postAudit(url string) int {
	pool := x509.NewCertPool()
	if path := os.Getenv("CA_FILE"); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Printf("error=cannot read CA_FILE %s: %v\n", path, err)
			return 1
		}
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: os.Getenv("SERVER_NAME")}},
	}
	body := []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}`)
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Printf("error=%v\n", err)
		return 1
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	fmt.Printf("status=%d body=%q\n", resp.StatusCode, bytes.TrimSpace(msg))
	return 0
}
