package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cairn-stream/cairn/internal/authgen"
)

// runAuth generates the NATS users, permissions and credentials of a deployment.
func runAuth(_ context.Context, args []string, stderr io.Writer) error {
	return auth(args, os.Stdout, stderr)
}

func auth(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn auth", flag.ContinueOnError)
	spec := fs.String("spec", "", "JSON file naming the jobs and their instances, coordinators, configsvc replicas, load generators and admins (docs/security.md)")
	out := fs.String("out", "", "directory to write auth.conf, nkeys/<user>.nk, env/<user>.env and tls/ into; empty: print the server config and every user's environment (seeds included) on stdout")
	hosts := fs.String("tls-hosts", "", "with --out: also make a CA and a server certificate for these host names and addresses, comma-separated (e.g. nats,localhost,127.0.0.1)")
	rotate := fs.Bool("rotate", false, "with --out: new nkeys for every user and a new CA and certificate, instead of keeping those already in the directory")
	table := fs.Bool("table", false, "print the permission rules as the Markdown tables of docs/security.md, and nothing else")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: cairn auth --spec FILE [--out DIR [--tls-hosts H1,H2] [--rotate]] | cairn auth --table\n\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *table {
		return authgen.WriteTable(stdout)
	}
	if *spec == "" {
		fmt.Fprintln(stderr, "cairn auth: --spec is required")
		return errUsage
	}
	if *out == "" && (*hosts != "" || *rotate) {
		fmt.Fprintln(stderr, "cairn auth: --tls-hosts and --rotate need --out")
		return errUsage
	}
	f, err := os.Open(*spec)
	if err != nil {
		return err
	}
	s, err := authgen.LoadSpec(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", *spec, err)
	}
	if *out != "" {
		users, err := authgen.WriteFiles(*out, s, *spec, splitList(*hosts), *rotate)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "cairn auth: %d users written to %s\n", len(users), *out)
		return nil
	}
	users, err := authgen.Generate(s, authgen.NoSeeds)
	if err != nil {
		return err
	}
	if err := authgen.WriteServerConfig(stdout, s, users, *spec); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\n# Credentials: each process's environment (secrets: hand each to its process only).\n")
	for _, u := range users {
		fmt.Fprintf(&b, "\n# %s\n%s\n", u.Name, strings.Join(authgen.Env(s, u), "\n"))
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}
