// Package guest defines how a child session reaches PostgreSQL inside a
// machine's guest OS: a Deployer installs the non-persistent runtime
// component and starts it; the Runtime it returns scans the instance,
// configures WAL archiving, lists and streams the WAL waiting in the guest's
// temporary folder, and deletes files once the repository holds them;
// closing the Runtime stops it and uninstalls it. Optional abilities come as
// further interfaces a Runtime may implement: BackupMode, SpaceReporter,
// DataFiles (the cluster's own files, for file-level images), and Recoverer
// (archive recovery of a restored data directory, its restore_command
// served from the host).
//
// PostgreSQL's archive_command copies each completed WAL file durably into
// the temporary folder using only what the guest already has, so archiving
// keeps working while no runtime is deployed (between child sessions).
//
// Implementations: guest/ssh (OpenSSH guests; host keys always verified) and
// guest/local (PostgreSQL on this host). guest/runtime is the component
// itself. guest/guesttest has a fake for unit tests of orchestration.
package guest
