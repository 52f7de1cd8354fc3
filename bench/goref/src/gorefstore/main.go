// Command gorefstore mounts the reference additional layer store (package
// github.com/containerd/stargz-snapshotter/store, v0.12.0 as Debian ships it
// in golang-github-containerd-stargz-snapshotter-dev) so the benchmarks can
// measure it next to ours. Debian does not package cmd/stargz-store; this is
// our own small wiring of the library, built in GOPATH mode (see
// bench/lib/goref.ts).
//
//	gorefstore [-config FILE] [-root DIR] [-log-level LEVEL] MOUNTPOINT
//
// It prints "ready MOUNTPOINT" on stdout once the FUSE mount is up and
// unmounts on SIGINT/SIGTERM, and when the process that started it dies. Left out on purpose: the kubeconfig keychain
// (its client-go dependency is not packaged and the bench registry is
// anonymous) and the bbolt metadata store (v0.12.0 ships only metadata/memory).
// The reference's service/resolver package cannot be built here (its cri.go
// needs k8s.io/cri-api, which Debian does not package), so hosts.go maps the
// same [resolver] config to registry hosts itself; credentials come from the
// docker config file, as in the reference's store binary of that era.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/containerd/containerd/log"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/store"
	toml "github.com/pelletier/go-toml"
	"github.com/sirupsen/logrus"
)

// storeConfig is the subset of the reference's config.toml this wiring
// understands: the filesystem settings (top level, [blob], [directory_cache],
// [fuse]) and [resolver.host."H"] mirrors.
type storeConfig struct {
	config.Config
	Resolver resolverConfig `toml:"resolver"`
}

// init ties the store's life to the process that started it (the benchmark):
// if that dies, the kernel sends SIGTERM and run() unmounts, rather than
// leaving a dead FUSE mount behind. The parent-death signal is an attribute
// of the calling thread, and only the main thread is the parent's child, so
// the main goroutine is pinned to it first (init runs there).
func init() {
	runtime.LockOSThread()
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if errno != 0 {
		fmt.Fprintf(os.Stderr, "gorefstore: prctl(PR_SET_PDEATHSIG): %v\n", errno)
	}
}

func main() {
	configPath := flag.String("config", "", "config.toml (optional; defaults apply when absent)")
	root := flag.String("root", "/var/lib/gorefstore", "directory for the store's caches and manifest pool")
	logLevel := flag.String("log-level", "info", "logrus level: debug, info, warn, error")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gorefstore [-config FILE] [-root DIR] [-log-level LEVEL] MOUNTPOINT")
		os.Exit(2)
	}
	mountpoint := flag.Arg(0)
	if err := run(*configPath, *root, *logLevel, mountpoint); err != nil {
		fmt.Fprintf(os.Stderr, "gorefstore: %v\n", err)
		os.Exit(1)
	}
}

func run(configPath, root, logLevel, mountpoint string) error {
	lvl, err := logrus.ParseLevel(logLevel)
	if err != nil {
		return err
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{})
	logrus.SetOutput(os.Stderr)
	ctx := log.WithLogger(context.Background(), log.L)

	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0700); err != nil {
		return err
	}
	if err := os.MkdirAll(mountpoint, 0755); err != nil {
		return err
	}

	hosts := registryHosts(ctx, cfg.Resolver)
	manager, err := store.NewLayerManager(ctx, root, hosts, memory.NewReader, cfg.Config)
	if err != nil {
		return fmt.Errorf("layer manager: %w", err)
	}
	// Subscribe before mounting so a signal during start-up still unmounts.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	// A reader of our stdout/stderr that went away must not kill us before we unmount.
	signal.Ignore(syscall.SIGPIPE)
	if err := store.Mount(ctx, mountpoint, manager, cfg.Debug); err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	fmt.Printf("ready %s\n", mountpoint)

	<-sig
	return unmount(mountpoint)
}

// loadConfig reads the TOML file through go-toml's Unmarshal, which also
// applies the `default:"…"` struct tags the reference relies on (for example
// directory_cache.direct = true). No file: the same defaults.
func loadConfig(path string) (storeConfig, error) {
	var cfg storeConfig
	data := []byte{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, err
		}
		data = b
	}
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// unmount detaches the FUSE mount; the serving goroutine then ends with it.
// A direct umount needs CAP_SYS_ADMIN; fusermount covers the unprivileged case.
func unmount(mountpoint string) error {
	errDirect := syscall.Unmount(mountpoint, 0)
	if errDirect == nil {
		return nil
	}
	out, err := exec.Command("fusermount", "-u", mountpoint).CombinedOutput()
	if err != nil {
		return fmt.Errorf("umount %s: %v; fusermount -u: %v: %s", mountpoint, errDirect, err, out)
	}
	return nil
}
