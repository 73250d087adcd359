package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pglogship/pglogship/walbackup"
)

// Config is the configuration file (TOML), documented in docs/cli.md.
// Secrets are never in it: it names the file or environment variable
// that holds each one.
type Config struct {
	Holder     string           `toml:"holder" json:"holder,omitempty"`
	LeaseTTL   duration         `toml:"lease_ttl" json:"lease_ttl,omitempty"`
	Log        LogConfig        `toml:"log" json:"log"`
	Store      StoreConfig      `toml:"store" json:"store"`
	Repository RepositoryConfig `toml:"repository" json:"repository"`
	// RuntimeBinaries are the runtime built for each guest architecture
	// (GOARCH), for SSH guests; local guests run this executable.
	RuntimeBinaries map[string]string `toml:"runtime_binaries" json:"runtime_binaries,omitempty"`
	Jobs            []JobConfig       `toml:"job" json:"jobs"`

	path string
}

// LogConfig says how the command logs (on stderr).
type LogConfig struct {
	Level  string `toml:"level" json:"level,omitempty"`   // debug, info, warn, error
	Format string `toml:"format" json:"format,omitempty"` // text or json
}

// StoreConfig locates the session store (PostgreSQL). The connection
// string may hold a password, so it comes from a file or the environment.
type StoreConfig struct {
	DSNFile string `toml:"dsn_file" json:"dsn_file,omitempty"`
	DSNEnv  string `toml:"dsn_env" json:"dsn_env,omitempty"`
	Schema  string `toml:"schema" json:"schema,omitempty"`
}

// RepositoryConfig locates the repository: fs, s3 or sftp.
type RepositoryConfig struct {
	Type string `toml:"type" json:"type"`
	Path string `toml:"path" json:"path,omitempty"` // fs: the root directory; sftp: the root on the server

	Endpoint      string `toml:"endpoint" json:"endpoint,omitempty"` // s3
	Bucket        string `toml:"bucket" json:"bucket,omitempty"`
	Prefix        string `toml:"prefix" json:"prefix,omitempty"`
	Region        string `toml:"region" json:"region,omitempty"`
	Insecure      bool   `toml:"insecure" json:"insecure,omitempty"`
	AccessKey     string `toml:"access_key" json:"access_key,omitempty"`
	SecretKeyFile string `toml:"secret_key_file" json:"secret_key_file,omitempty"`
	SecretKeyEnv  string `toml:"secret_key_env" json:"secret_key_env,omitempty"`

	Address    string `toml:"address" json:"address,omitempty"` // sftp: host:port
	User       string `toml:"user" json:"user,omitempty"`
	KeyFile    string `toml:"key_file" json:"key_file,omitempty"`       // sftp: private key
	KnownHosts string `toml:"known_hosts" json:"known_hosts,omitempty"` // sftp: host keys, always verified
}

// JobConfig is one backup job.
type JobConfig struct {
	Name           string   `toml:"name" json:"name"`
	Enabled        *bool    `toml:"enabled" json:"enabled,omitempty"`
	Interval       duration `toml:"interval" json:"interval,omitempty"`
	Schedule       string   `toml:"schedule" json:"schedule,omitempty"`
	SkipMissedRun  bool     `toml:"skip_missed_run" json:"skip_missed_run,omitempty"`
	WALDir         string   `toml:"wal_dir" json:"wal_dir,omitempty"`
	Shipping       string   `toml:"shipping" json:"shipping,omitempty"`
	Compression    string   `toml:"compression" json:"compression,omitempty"`
	FullImageEvery int      `toml:"full_image_every" json:"full_image_every,omitempty"`
	// KeyFile or KeyEnv hold the key (64 hex digits: 32 bytes) that
	// encrypts the job's bundles and images; none: not encrypted.
	KeyFile    string           `toml:"key_file" json:"key_file,omitempty"`
	KeyEnv     string           `toml:"key_env" json:"key_env,omitempty"`
	Retention  RetentionConfig  `toml:"retention" json:"retention"`
	Hypervisor HypervisorConfig `toml:"hypervisor" json:"hypervisor"`
	Guest      GuestConfig      `toml:"guest" json:"guest"`
	Machines   []MachineConfig  `toml:"machine" json:"machines"`
}

// HypervisorConfig says how the job images its machines: "physical" (the
// default; file-level images of each cluster, hypervisor/physical) or
// "qemu" (the VM's whole disk through its QMP monitor, hypervisor/qemu).
// The other keys are QEMU's (qemu.Config).
type HypervisorConfig struct {
	Type              string   `toml:"type" json:"type,omitempty"`
	WorkDir           string   `toml:"work_dir" json:"work_dir,omitempty"`   // backup targets and restore chains, on this host
	QemuImg           string   `toml:"qemu_img" json:"qemu_img,omitempty"`   // default qemu-img from PATH
	JobSpeed          int64    `toml:"job_speed" json:"job_speed,omitempty"` // bytes per second per backup job; 0: no limit
	GuestAgentTimeout duration `toml:"guest_agent_timeout" json:"guest_agent_timeout,omitempty"`
	// Quiesce freezes the guest's file systems through its agent around
	// each snapshot (machines with guest_agent_socket; walbackup.Config.Quiesce).
	Quiesce bool `toml:"quiesce" json:"quiesce,omitempty"`
}

// qemu reports whether the job images QEMU VMs.
func (h HypervisorConfig) qemu() bool { return h.Type == "qemu" }

// RetentionConfig is walbackup.Retention.
type RetentionConfig struct {
	RestorePoints int `toml:"restore_points" json:"restore_points,omitempty"`
	ImageDays     int `toml:"image_days" json:"image_days,omitempty"`
	WALDays       int `toml:"wal_days" json:"wal_days,omitempty"`
}

// GuestConfig says how a job reaches its machines' guests: "local" (this
// host) or "ssh", and how the runtime there reaches PostgreSQL.
type GuestConfig struct {
	Type     string         `toml:"type" json:"type"`
	Postgres PostgresConfig `toml:"postgres" json:"postgres"`
	SSH      SSHConfig      `toml:"ssh" json:"ssh"`
}

// PostgresConfig is how the runtime connects to PostgreSQL in the guest.
type PostgresConfig struct {
	Host         string `toml:"host" json:"host,omitempty"`
	Port         int    `toml:"port" json:"port,omitempty"`
	User         string `toml:"user" json:"user"`
	Database     string `toml:"database" json:"database,omitempty"`
	PasswordFile string `toml:"password_file" json:"password_file,omitempty"`
	PasswordEnv  string `toml:"password_env" json:"password_env,omitempty"`
	PassFile     string `toml:"passfile" json:"passfile,omitempty"` // a .pgpass in the guest
	SSLMode      string `toml:"sslmode" json:"sslmode,omitempty"`
	// DSNEnv takes all of the above from a connection string in the
	// environment (the demo's PGLOGSHIP_DEMO_DSN).
	DSNEnv string `toml:"dsn_env" json:"dsn_env,omitempty"`
}

// SSHConfig is how the host logs into SSH guests.
type SSHConfig struct {
	User       string `toml:"user" json:"user,omitempty"`
	KeyFile    string `toml:"key_file" json:"key_file,omitempty"`
	KnownHosts string `toml:"known_hosts" json:"known_hosts,omitempty"`
	BaseDir    string `toml:"base_dir" json:"base_dir,omitempty"`
}

// MachineConfig is one PostgreSQL machine of a job.
type MachineConfig struct {
	ID             string   `toml:"id" json:"id"`
	Address        string   `toml:"address" json:"address,omitempty"`
	Instances      []string `toml:"instances" json:"instances,omitempty"`
	AllInstances   bool     `toml:"all_instances" json:"all_instances,omitempty"`
	RepositoryPath string   `toml:"repository_path" json:"repository_path,omitempty"`
	// QEMU VMs only (qemu.VM): the QMP monitor QEMU gives pglogship
	// (-qmp unix:PATH,server=on,wait=off), required; the guest agent's
	// socket, for freezing file systems around the snapshot; the disk's
	// qcow2 node name (default qemu.DefaultNode).
	QMPSocket        string `toml:"qmp_socket" json:"qmp_socket,omitempty"`
	GuestAgentSocket string `toml:"guest_agent_socket" json:"guest_agent_socket,omitempty"`
	Node             string `toml:"node" json:"node,omitempty"`
}

// duration is a time.Duration written as "15m" in the file and in JSON.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like 90s, 15m or 8h)", b)
	}
	d.Duration = v
	return nil
}

func (d duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Environment variables that override the file (flags override both).
const (
	envConfig   = "PGLOGSHIP_CONFIG"
	envStoreDSN = "PGLOGSHIP_STORE_DSN" // the store's connection string itself
	envHolder   = "PGLOGSHIP_HOLDER"
	envLogLevel = "PGLOGSHIP_LOG_LEVEL"
)

// configError is a configuration that cannot be used: exit code 3.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Sprintf(format, args...)}
}

// loadConfig reads the file at path and applies the environment.
func loadConfig(path string) (*Config, error) {
	if path == "" {
		return nil, configErrorf("no configuration file: pass --config FILE or set %s", envConfig)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("configuration file: %v", err)
	}
	var cfg Config
	md, err := toml.Decode(string(b), &cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			key := ""
			if pe.LastKey != "" {
				key = " (key " + pe.LastKey + ")"
			}
			return nil, configErrorf("%s:%d:%d: %s%s", path, pe.Position.Line, pe.Position.Col, pe.Message, key)
		}
		return nil, configErrorf("%s: %v", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var keys []string
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return nil, configErrorf("%s: unknown key %s (see docs/cli.md for the keys there are)", path, strings.Join(keys, ", "))
	}
	cfg.path = path
	if v := os.Getenv(envHolder); v != "" {
		cfg.Holder = v
	}
	if v := os.Getenv(envLogLevel); v != "" {
		cfg.Log.Level = v
	}
	return &cfg, cfg.validate()
}

// validate checks what can be checked without connecting anywhere, and
// names the key to fix.
func (c *Config) validate() error {
	p := c.path
	if c.Store.DSNFile == "" && c.Store.DSNEnv == "" && os.Getenv(envStoreDSN) == "" {
		return configErrorf("%s: [store] needs dsn_file or dsn_env (the session store's connection string, kept out of the file), or set %s",
			p, envStoreDSN)
	}
	switch c.Repository.Type {
	case "fs":
		if c.Repository.Path == "" {
			return configErrorf("%s: [repository] type fs needs path", p)
		}
	case "s3":
		if c.Repository.Endpoint == "" || c.Repository.Bucket == "" || c.Repository.AccessKey == "" {
			return configErrorf("%s: [repository] type s3 needs endpoint, bucket and access_key", p)
		}
		if c.Repository.SecretKeyFile == "" && c.Repository.SecretKeyEnv == "" {
			return configErrorf("%s: [repository] type s3 needs secret_key_file or secret_key_env", p)
		}
	case "sftp":
		if c.Repository.Address == "" || c.Repository.User == "" || c.Repository.KeyFile == "" || c.Repository.Path == "" {
			return configErrorf("%s: [repository] type sftp needs address, user, key_file and path", p)
		}
		if c.Repository.KnownHosts == "" {
			return configErrorf("%s: [repository] type sftp needs known_hosts: host keys are always verified", p)
		}
	case "":
		return configErrorf("%s: [repository] needs type: fs, s3 or sftp", p)
	default:
		return configErrorf("%s: [repository] type %q: use fs, s3 or sftp", p, c.Repository.Type)
	}
	if len(c.Jobs) == 0 {
		return configErrorf("%s: no [[job]]: the file lists the jobs to run", p)
	}
	seen := map[string]bool{}
	for i, j := range c.Jobs {
		where := fmt.Sprintf("%s: [[job]] %d", p, i+1)
		if j.Name == "" {
			return configErrorf("%s needs name", where)
		}
		where = fmt.Sprintf("%s: job %q", p, j.Name)
		if seen[j.Name] {
			return configErrorf("%s is listed twice", where)
		}
		seen[j.Name] = true
		if len(j.Machines) == 0 {
			return configErrorf("%s has no [[job.machine]]", where)
		}
		switch j.Guest.Type {
		case "local":
		case "ssh":
			if j.Guest.SSH.User == "" || j.Guest.SSH.KeyFile == "" {
				return configErrorf("%s: [job.guest.ssh] needs user and key_file", where)
			}
			if j.Guest.SSH.KnownHosts == "" {
				return configErrorf("%s: [job.guest.ssh] needs known_hosts: host keys are always verified", where)
			}
		default:
			return configErrorf("%s: [job.guest] type %q: use local or ssh", where, j.Guest.Type)
		}
		if j.Guest.Postgres.User == "" && j.Guest.Postgres.DSNEnv == "" {
			return configErrorf("%s: [job.guest.postgres] needs user (or dsn_env)", where)
		}
		for k, m := range j.Machines {
			if m.ID == "" {
				return configErrorf("%s: [[job.machine]] %d needs id", where, k+1)
			}
		}
		if err := j.Hypervisor.validate(where, j.Machines); err != nil {
			return err
		}
		switch j.Shipping {
		case "", "auto", "direct", "host":
		default:
			return configErrorf("%s: shipping %q: use auto, direct or host", where, j.Shipping)
		}
		switch j.Compression {
		case "", "zstd", "s2":
		default:
			return configErrorf("%s: compression %q: use zstd or s2", where, j.Compression)
		}
		if iv := j.Interval.Duration; iv != 0 && (iv < time.Minute || iv > walbackup.MaxLogBackupInterval) {
			return configErrorf("%s: interval %s: WAL ships every 1m to %s", where, iv, walbackup.MaxLogBackupInterval)
		}
		if _, err := parseSchedule(j.Schedule); err != nil {
			return configErrorf("%s: schedule: %v", where, err)
		}
	}
	return nil
}

// validate checks the [job.hypervisor] section and the machines' keys
// that belong to it.
func (h HypervisorConfig) validate(where string, machines []MachineConfig) error {
	switch h.Type {
	case "", "physical":
		if h.WorkDir != "" || h.QemuImg != "" || h.JobSpeed != 0 || h.GuestAgentTimeout.Duration != 0 || h.Quiesce {
			return configErrorf("%s: [job.hypervisor] work_dir, qemu_img, job_speed, guest_agent_timeout and quiesce are for type \"qemu\"", where)
		}
		for _, m := range machines {
			if m.QMPSocket != "" || m.GuestAgentSocket != "" || m.Node != "" {
				return configErrorf("%s: machine %q: qmp_socket, guest_agent_socket and node are for QEMU VMs: set [job.hypervisor] type = \"qemu\"",
					where, m.ID)
			}
		}
	case "qemu":
		if h.WorkDir == "" {
			return configErrorf("%s: [job.hypervisor] type qemu needs work_dir (a directory on this host for backup targets and restore chains)", where)
		}
		if h.JobSpeed < 0 || h.GuestAgentTimeout.Duration < 0 {
			return configErrorf("%s: [job.hypervisor] job_speed and guest_agent_timeout cannot be negative", where)
		}
		for _, m := range machines {
			if m.QMPSocket == "" {
				return configErrorf("%s: machine %q needs qmp_socket: the unix socket of a QMP monitor QEMU gives pglogship (-qmp unix:PATH,server=on,wait=off)",
					where, m.ID)
			}
		}
	default:
		return configErrorf("%s: [job.hypervisor] type %q: use physical or qemu", where, h.Type)
	}
	return nil
}

// job returns the job named name; with name empty, the only one.
func (c *Config) job(name string) (*JobConfig, error) {
	if name == "" {
		if len(c.Jobs) == 1 {
			return &c.Jobs[0], nil
		}
		return nil, usageErrorf("the configuration has %d jobs: name one with --job (%s)", len(c.Jobs), c.jobNames())
	}
	for i := range c.Jobs {
		if c.Jobs[i].Name == name {
			return &c.Jobs[i], nil
		}
	}
	return nil, usageErrorf("no job %q in %s (jobs: %s)", name, c.path, c.jobNames())
}

func (c *Config) jobNames() string {
	var names []string
	for _, j := range c.Jobs {
		names = append(names, fmt.Sprintf("%q", j.Name))
	}
	return strings.Join(names, ", ")
}

// secret reads a secret from a file (trailing newline dropped) or the
// environment; what names the key, for errors that never show the value.
func secret(file, env, what string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", configErrorf("%s: %v", what, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", configErrorf("%s: environment variable %s is not set", what, env)
		}
		return v, nil
	}
	return "", nil
}
