package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pglogship/pglogship/walbackup"
)

func newPublishCmd(g *globals) *cobra.Command {
	var pick pickFlags
	var srv serverFlags
	var tf targetFlags
	var restorePoint, cache string
	cmd := &cobra.Command{
		Use:   "publish --cache DIR --port PORT [--time T | --lsn L | --xid X | --name N | --consistent]",
		Short: "Run an instance straight from the backup (latest or a point in time), its writes kept in a cache; unpublish removes it",
		Long: `publish brings the instance up from a restore point and the shipped WAL, to
the target (the latest state by default), without touching the original:
everything it makes and every write goes under --cache (a new directory),
the backup is only read. It stays up, listed as a working restore session,
until "pglogship unpublish --cache DIR" stops it and removes the cache;
that also works after a crash of the host that published it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			target, err := tf.target(cmd)
			if err != nil {
				return err
			}
			if cache == "" {
				return usageErrorf("--cache DIR is required: a new directory for the published instance")
			}
			if cache, err = filepath.Abs(cache); err != nil {
				return usageErrorf("--cache: %v", err)
			}
			opts, err := srv.options()
			if err != nil {
				return err
			}
			if opts.Port == 0 {
				return usageErrorf("--port is required: a free port for the published server, beside the original")
			}
			e, b, m, prog, err := g.openMachine(ctx, &pick)
			if err != nil {
				return err
			}
			defer e.Close()
			if err := b.startsServer("publish"); err != nil {
				return err
			}
			pub, err := b.job.Publish(ctx, walbackup.PublishRequest{Machine: m.ID, SystemID: pick.systemID, DataDir: pick.dataDir,
				Target: target, RestorePoint: restorePoint, Cache: cache, Guest: m, Recovery: opts})
			prog.finish()
			if err != nil {
				return planError(err)
			}
			if g.json {
				return printJSON(g.stdout, pub)
			}
			fmt.Fprintf(g.stdout, "published restore point %s of machine %s to %s: data directory %s, port %d, session %s\n",
				pub.Plan.RestorePoint.ID, m.ID, target, pub.DataDir, opts.Port, pub.Session)
			fmt.Fprintf(g.stdout, "unpublish with: pglogship unpublish --cache %s\n", pub.Cache)
			return nil
		},
	}
	cmd.Flags().StringVar(&cache, "cache", "", "a new directory for everything the publication makes and writes")
	tf.add(cmd, &restorePoint)
	pick.add(cmd)
	srv.add(cmd)
	jsonFlag(cmd, g)
	return cmd
}

func newUnpublishCmd(g *globals) *cobra.Command {
	var cache string
	cmd := &cobra.Command{
		Use:   "unpublish --cache DIR",
		Short: "Stop a published instance and remove its cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if cache == "" {
				return usageErrorf("--cache DIR is required: the directory publish made")
			}
			abs, err := filepath.Abs(cache)
			if err != nil {
				return usageErrorf("--cache: %v", err)
			}
			e, err := g.open(ctx, slog.LevelWarn, nil, nil)
			if err != nil {
				return err
			}
			defer e.Close()
			b, err := g.selected(e)
			if err != nil {
				return err
			}
			if err := b.job.Unpublish(ctx, abs); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "unpublished %s\n", abs)
			return nil
		},
	}
	cmd.Flags().StringVar(&cache, "cache", "", "the cache directory of the publication")
	return cmd
}
