package main

import (
	"context"
	"net/http"
	"time"

	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/stargz-snapshotter/fs/source"
	dockercliconfig "github.com/docker/cli/cli/config"
	rhttp "github.com/hashicorp/go-retryablehttp"
)

// resolverConfig is the [resolver] table of the reference's config.toml:
//
//	[[resolver.host."127.0.0.1:5000".mirrors]]
//	host = "127.0.0.1:5000"
//	insecure = true
type resolverConfig struct {
	Host map[string]hostConfig `toml:"host"`
}

type hostConfig struct {
	Mirrors []mirrorConfig `toml:"mirrors"`
}

type mirrorConfig struct {
	Host     string `toml:"host"`
	Insecure bool   `toml:"insecure"`
	// RequestTimeoutSec: 0 means 30 s, a negative value means no timeout.
	RequestTimeoutSec int `toml:"request_timeout_sec"`
}

const defaultRequestTimeout = 30 * time.Second

// UserAgent names this store in the registry's access log, so the benchmarks
// can count its traffic apart from podman's and curl's (containerd's resolver
// would otherwise say "containerd/…" and the blob fetcher "Go-http-client").
const UserAgent = "gorefstore"

type userAgent struct{ next http.RoundTripper }

func (t userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", UserAgent)
	return t.next.RoundTrip(r)
}

// registryHosts lists, for a reference, its configured mirrors in order and
// then its own host, each with a retrying HTTP client (the reference's blob
// fetcher relies on the retries) and a docker authorizer fed from the docker
// config file. Plain HTTP for mirrors marked insecure and for localhost.
func registryHosts(ctx context.Context, cfg resolverConfig) source.RegistryHosts {
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		refHost := ref.Hostname()
		candidates := append(append([]mirrorConfig{}, cfg.Host[refHost].Mirrors...), mirrorConfig{Host: refHost})
		hosts := make([]docker.RegistryHost, 0, len(candidates))
		for _, m := range candidates {
			retrying := rhttp.NewClient()
			retrying.Logger = nil // one log line per request would drown the store's own
			retrying.HTTPClient.Transport = userAgent{next: retrying.HTTPClient.Transport}
			client := retrying.StandardClient()
			switch {
			case m.RequestTimeoutSec == 0:
				client.Timeout = defaultRequestTimeout
			case m.RequestTimeoutSec > 0:
				client.Timeout = time.Duration(m.RequestTimeoutSec) * time.Second
			}
			h := docker.RegistryHost{
				Client:       client,
				Host:         m.Host,
				Scheme:       "https",
				Path:         "/v2",
				Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
				Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(client), docker.WithAuthCreds(dockerConfigCreds(ctx))),
			}
			if local, _ := docker.MatchLocalhost(h.Host); local || m.Insecure {
				h.Scheme = "http"
			}
			if h.Host == "docker.io" {
				h.Host = "registry-1.docker.io"
			}
			hosts = append(hosts, h)
		}
		return hosts, nil
	}
}

// dockerConfigCreds answers a registry's auth challenge with the entry for
// that host in $DOCKER_CONFIG/config.json (or ~/.docker/config.json); no
// entry means anonymous.
func dockerConfigCreds(ctx context.Context) func(host string) (string, string, error) {
	return func(host string) (string, string, error) {
		cf, err := dockercliconfig.Load("")
		if err != nil {
			log.G(ctx).WithError(err).Warn("cannot load the docker config file; trying anonymously")
			return "", "", nil
		}
		if host == "docker.io" || host == "registry-1.docker.io" {
			host = "https://index.docker.io/v1/" // the key docker login uses for Docker Hub
		}
		ac, err := cf.GetAuthConfig(host)
		if err != nil {
			return "", "", err
		}
		if ac.IdentityToken != "" {
			return "", ac.IdentityToken, nil
		}
		return ac.Username, ac.Password, nil
	}
}
