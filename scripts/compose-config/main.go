// compose-config: `docker compose config` for machines without the compose plugin.
//
// It loads a compose file with compose-go, the library `docker compose` itself uses, so the file
// goes through the same schema validation, interpolation, normalisation and consistency checks,
// and prints the resulting model (as `docker compose config --format json` does) or nothing (-q).
// scripts/k8s-validate.sh builds it into var/bin when `docker compose` is not installed.
//
//	compose-config -f deploy/docker-compose.yml [config] [-q] [--format json|yaml]
//
// (`config` may stand between the flags, as in `docker compose -f FILE config -q`.)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	flags := flag.NewFlagSet("compose-config", flag.ExitOnError)
	file := flags.String("f", "", "compose file")
	quiet := flags.Bool("q", false, "only validate, print nothing")
	format := flags.String("format", "yaml", "output format: yaml or json")
	_ = flags.Parse(os.Args[1:])
	if flags.NArg() > 0 && flags.Arg(0) == "config" {
		_ = flags.Parse(flags.Args()[1:])
	}
	if *file == "" || flags.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-config -f FILE [-q] [--format json|yaml]")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions([]string{*file},
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithResolvedPaths(true),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	if *quiet {
		return
	}
	var out []byte
	switch *format {
	case "json":
		out, err = project.MarshalJSON()
	case "yaml":
		out, err = project.MarshalYAML()
	default:
		err = fmt.Errorf("unknown format %q", *format)
	}
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
