package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	guestssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/hypervisor/qemu"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/repository/s3"
	"github.com/pglogship/pglogship/repository/sftp"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// env is what a command works with: the configuration and what it opened.
// Close releases it.
type env struct {
	cfg           *Config
	logger        *slog.Logger
	clk           clock.Clock
	runtimeBinary string // globals.runtimeBinary

	store *postgres.Store
	repo  repository.Repository
	jobs  []*builtJob
	// observe and progress, when set before jobs are built, hear every
	// job's events (walbackup.Config.Observer and Progress).
	observe, progress func(job string, e walbackup.Event)
}

// builtJob is a job of the configuration, made.
type builtJob struct {
	cfg    *JobConfig
	job    *walbackup.Job
	guests guest.Deployer
	auth   repository.Authenticator // the key of an encrypted job; nil
}

// startsServer refuses what would start PostgreSQL on a restored image of
// a QEMU job: that needs a VM booted from the restored disk, which the
// command does not start.
func (b *builtJob) startsServer(what string) error {
	if !b.cfg.Hypervisor.qemu() {
		return nil
	}
	return usageErrorf("job %q images QEMU VMs: %s needs a VM booted from the restored disk, which this command does not start; "+
		"restore the disk with restore --to FILE.qcow2 --no-start, boot a VM from it, and recover it there (examples/qemu-vm shows how)", b.cfg.Name, what)
}

func (e *env) Close() {
	if e.store != nil {
		e.store.Close()
	}
	if c, ok := e.repo.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// openStore connects to the session store.
func (e *env) openStore(ctx context.Context) error {
	dsn := os.Getenv(envStoreDSN)
	if dsn == "" {
		var err error
		if dsn, err = secret(e.cfg.Store.DSNFile, e.cfg.Store.DSNEnv, "[store] dsn_file/dsn_env"); err != nil {
			return err
		}
	}
	if dsn == "" {
		return configErrorf("[store]: the connection string is empty")
	}
	st, err := postgres.Open(ctx, postgres.Config{ConnString: dsn, Schema: e.cfg.Store.Schema, Logger: e.logger})
	if err != nil {
		return fmt.Errorf("session store (%s): %w; check [store] in %s and that the database is up", redactDSN(dsn), err, e.cfg.path)
	}
	e.store = st
	return nil
}

// openRepository opens the repository; sftp connects.
func (e *env) openRepository(ctx context.Context) error {
	rc := e.cfg.Repository
	switch rc.Type {
	case "fs":
		r, err := fs.New(fs.Config{Root: rc.Path})
		if err != nil {
			return fmt.Errorf("repository %s: %w; check [repository] path", rc.Path, err)
		}
		e.repo = r
	case "s3":
		key, err := secret(rc.SecretKeyFile, rc.SecretKeyEnv, "[repository] secret_key_file/secret_key_env")
		if err != nil {
			return err
		}
		r, err := s3.New(s3.Config{Endpoint: rc.Endpoint, Bucket: rc.Bucket, Prefix: rc.Prefix, AccessKey: rc.AccessKey, SecretKey: key,
			Insecure: rc.Insecure, Region: rc.Region, Clock: e.clk})
		if err != nil {
			return fmt.Errorf("repository s3://%s/%s: %w; check [repository]", rc.Bucket, rc.Prefix, err)
		}
		e.repo = r
	case "sftp":
		auth, hostKeys, err := sshAuth(rc.KeyFile, rc.KnownHosts, "[repository]")
		if err != nil {
			return err
		}
		r, err := sftp.New(ctx, sftp.Config{Addr: rc.Address, User: rc.User, Auth: auth, HostKeyCallback: hostKeys, Root: rc.Path})
		if err != nil {
			return fmt.Errorf("repository sftp://%s@%s%s: %w; check [repository] and that the server is up", rc.User, rc.Address, rc.Path, err)
		}
		e.repo = r
	}
	return nil
}

// buildJobs makes the configured jobs; the store and repository must be
// open.
func (e *env) buildJobs() error {
	for i := range e.cfg.Jobs {
		jc := &e.cfg.Jobs[i]
		b, err := e.buildJob(jc)
		if err != nil {
			return err
		}
		e.jobs = append(e.jobs, b)
	}
	return nil
}

func (e *env) buildJob(jc *JobConfig) (*builtJob, error) {
	where := fmt.Sprintf("%s: job %q", e.cfg.path, jc.Name)
	guests, err := e.deployer(jc)
	if err != nil {
		return nil, err
	}
	key, err := jobKey(jc, where)
	if err != nil {
		return nil, err
	}
	var machines []walbackup.Machine
	for _, m := range jc.Machines {
		machines = append(machines, walbackup.Machine{ID: m.ID, Address: m.Address, Instances: m.Instances, AllInstances: m.AllInstances,
			RepositoryPath: m.RepositoryPath})
	}
	hv, err := e.hypervisor(jc, guests, key)
	if err != nil {
		return nil, configErrorf("%s: %v", where, err)
	}
	sched, _ := parseSchedule(jc.Schedule) // checked by validate
	interval := jc.Interval.Duration
	if interval == 0 {
		interval = walbackup.DefaultLogBackupInterval
	}
	name := jc.Name
	cfg := walbackup.Config{
		Name: name, Machines: machines, Schedule: sched, SkipMissedRun: jc.SkipMissedRun, LogBackupInterval: interval,
		WALDir: jc.WALDir, Hypervisor: hv, Guests: guests, Repository: e.repo, Sessions: e.store, Key: key,
		Retention:      walbackup.Retention{RestorePoints: jc.Retention.RestorePoints, ImageDays: jc.Retention.ImageDays, WALDays: jc.Retention.WALDays},
		FullImageEvery: jc.FullImageEvery, Quiesce: jc.Hypervisor.Quiesce,
		Shipping: walbackup.Shipping{Mode: walbackup.ShippingMode(jc.Shipping), Compression: guest.Codec(jc.Compression)},
		Clock:    e.clk, Logger: e.logger.With("job", name),
	}
	if e.observe != nil {
		cfg.Observer = func(ev walbackup.Event) { e.observe(name, ev) }
	}
	if e.progress != nil {
		cfg.Progress = func(ev walbackup.Event) { e.progress(name, ev) }
	}
	j, err := walbackup.NewJob(cfg)
	if err != nil {
		return nil, configErrorf("%s: %v", where, err)
	}
	b := &builtJob{cfg: jc, job: j, guests: guests}
	if key != nil {
		b.auth = key
	}
	return b, nil
}

// hypervisor makes the job's hypervisor: file-level images of each
// cluster, or QEMU VMs' disks.
func (e *env) hypervisor(jc *JobConfig, guests guest.Deployer, key *bundle.Key) (hypervisor.Hypervisor, error) {
	if !jc.Hypervisor.qemu() {
		var pm []physical.Machine
		for _, m := range jc.Machines {
			pm = append(pm, physical.Machine{ID: m.ID, Address: m.Address})
		}
		return physical.New(physical.Config{Machines: pm, Guests: guests, Key: key, Clock: e.clk, Logger: e.logger})
	}
	var vms []qemu.VM
	for _, m := range jc.Machines {
		vms = append(vms, qemu.VM{ID: m.ID, QMPSocket: m.QMPSocket, GuestAgentSocket: m.GuestAgentSocket, SSHAddr: m.Address, Node: m.Node})
	}
	h := jc.Hypervisor
	return qemu.New(qemu.Config{VMs: vms, WorkDir: h.WorkDir, QemuImg: h.QemuImg, JobSpeed: h.JobSpeed,
		GuestAgentTimeout: h.GuestAgentTimeout.Duration, Key: key, Clock: e.clk, Logger: e.logger})
}

// jobKey reads the job's encryption key, if it has one.
func jobKey(jc *JobConfig, where string) (*bundle.Key, error) {
	s, err := secret(jc.KeyFile, jc.KeyEnv, where+": key_file/key_env")
	if err != nil || s == "" {
		return nil, err
	}
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return nil, configErrorf("%s: key_file/key_env: the key is 64 hex digits (32 bytes; e.g. openssl rand -hex 32)", where)
	}
	return bundle.NewKey(b)
}

// runtimeExecutable is the program guests run as the runtime, with the
// argument "runtime": this executable unless globals named another.
func (e *env) runtimeExecutable() (string, error) {
	if e.runtimeBinary != "" {
		return e.runtimeBinary, nil
	}
	return os.Executable()
}

// deployer makes the job's guest access: local runtimes are this
// executable run with the argument "runtime".
func (e *env) deployer(jc *JobConfig) (guest.Deployer, error) {
	where := fmt.Sprintf("%s: job %q: [job.guest.postgres]", e.cfg.path, jc.Name)
	conn, err := connConfig(jc.Guest.Postgres, where)
	if err != nil {
		return nil, err
	}
	switch jc.Guest.Type {
	case "local":
		self, err := e.runtimeExecutable()
		if err != nil {
			return nil, err
		}
		return local.New(local.Config{Binary: self, Args: []string{runtimeArg}, Conn: conn, Logger: e.logger})
	default: // ssh, as validate checked
		sc := jc.Guest.SSH
		auth, hostKeys, err := sshAuth(sc.KeyFile, sc.KnownHosts, fmt.Sprintf("job %q: [job.guest.ssh]", jc.Name))
		if err != nil {
			return nil, err
		}
		bins := e.cfg.RuntimeBinaries
		var args []string
		if len(bins) == 0 { // this executable, run as the runtime
			self, err := e.runtimeExecutable()
			if err != nil {
				return nil, err
			}
			bins, args = map[string]string{goruntime.GOARCH: self}, []string{runtimeArg}
		}
		d, err := guestssh.New(guestssh.Config{User: sc.User, Auth: auth, HostKeyCallback: hostKeys, Binaries: bins, Args: args, BaseDir: sc.BaseDir,
			Conn: conn, Logger: e.logger})
		if err != nil {
			return nil, configErrorf("job %q: [job.guest.ssh]: %v", jc.Name, err)
		}
		return d, nil
	}
}

// connConfig is how the runtime reaches PostgreSQL; the password comes
// from a file or the environment.
func connConfig(pc PostgresConfig, where string) (runtime.ConnConfig, error) {
	if pc.DSNEnv != "" {
		dsn, ok := os.LookupEnv(pc.DSNEnv)
		if !ok {
			return runtime.ConnConfig{}, configErrorf("%s: dsn_env: environment variable %s is not set", where, pc.DSNEnv)
		}
		p, err := pgx.ParseConfig(dsn)
		if err != nil {
			return runtime.ConnConfig{}, configErrorf("%s: dsn_env %s: not a connection string", where, pc.DSNEnv)
		}
		return runtime.ConnConfig{Host: p.Host, Port: int(p.Port), User: p.User, Database: p.Database, Password: p.Password}, nil
	}
	pw, err := secret(pc.PasswordFile, pc.PasswordEnv, where+" password_file/password_env")
	if err != nil {
		return runtime.ConnConfig{}, err
	}
	return runtime.ConnConfig{Host: pc.Host, Port: pc.Port, User: pc.User, Database: pc.Database, Password: pw, PassFile: pc.PassFile,
		SSLMode: pc.SSLMode}, nil
}

// sshAuth reads a private key and a known_hosts file: host keys are
// always verified.
func sshAuth(keyFile, knownHosts, where string) ([]gossh.AuthMethod, gossh.HostKeyCallback, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, configErrorf("%s key_file: %v", where, err)
	}
	signer, err := gossh.ParsePrivateKey(b)
	if err != nil {
		return nil, nil, configErrorf("%s key_file %s: not an unencrypted private key", where, keyFile)
	}
	hk, err := knownhosts.New(knownHosts)
	if err != nil {
		return nil, nil, configErrorf("%s known_hosts: %v", where, err)
	}
	return []gossh.AuthMethod{gossh.PublicKeys(signer)}, hk, nil
}

// parseSchedule reads a job's schedule: "" (started by hand only),
// "daily 22:00", "daily 22:00 mon,thu", or "every 4h".
func parseSchedule(s string) (walbackup.Schedule, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, nil
	}
	bad := fmt.Errorf("%q: write \"daily HH:MM\", \"daily HH:MM mon,thu\" or \"every Nh\"", s)
	switch {
	case f[0] == "daily" && (len(f) == 2 || len(f) == 3):
		t, err := time.Parse("15:04", f[1])
		if err != nil {
			return nil, bad
		}
		var days []time.Weekday
		if len(f) == 3 {
			for _, d := range strings.Split(f[2], ",") {
				wd, ok := weekdays[strings.ToLower(d)]
				if !ok {
					return nil, fmt.Errorf("%q: %q is not a day (mon, tue, wed, thu, fri, sat, sun)", s, d)
				}
				days = append(days, wd)
			}
		}
		return walbackup.Daily(t.Hour(), t.Minute(), days...), nil
	case f[0] == "every" && len(f) == 2 && strings.HasSuffix(f[1], "h"):
		n, err := strconv.Atoi(strings.TrimSuffix(f[1], "h"))
		if err != nil {
			return nil, bad
		}
		h := walbackup.EveryHours(n)
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("%q: %v", s, err)
		}
		return h, nil
	}
	return nil, bad
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// redactDSN shows a connection string without its password.
func redactDSN(dsn string) string {
	p, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "(unparsable connection string, not shown)"
	}
	pw := ""
	if p.Password != "" {
		pw = " password=REDACTED"
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s%s", p.Host, p.Port, p.User, p.Database, pw)
}
