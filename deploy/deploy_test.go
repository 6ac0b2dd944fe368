// Package deploy holds the files operators deploy with: Grafana dashboards,
// Prometheus rules and scrape config. No Docker engine runs in the test
// environment, so these tests check what can be checked without one: the
// files parse, and the compose profile mounts files that exist.
package deploy

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// The monitoring profile runs Prometheus and Grafana on the repository's
// files, and only under that profile.
func TestComposeMonitoringProfile(t *testing.T) {
	compose := readYAML(t, "../docker-compose.yml")
	services, _ := compose["services"].(map[string]any)
	for _, name := range []string{"prometheus", "grafana"} {
		svc, ok := services[name].(map[string]any)
		if !ok {
			t.Fatalf("no %s service", name)
		}
		profiles, _ := svc["profiles"].([]any)
		if len(profiles) != 1 || profiles[0] != "monitoring" {
			t.Errorf("%s: profiles %v, want [monitoring]", name, profiles)
		}
		vols, _ := svc["volumes"].([]any)
		if len(vols) == 0 {
			t.Errorf("%s mounts nothing", name)
		}
		for _, v := range vols {
			src, _, _ := strings.Cut(v.(string), ":")
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
		}
	}
	for name, s := range services {
		if name == "prometheus" || name == "grafana" {
			continue
		}
		if p, ok := s.(map[string]any)["profiles"]; ok {
			t.Errorf("%s is behind profiles %v: plain `docker compose up` would not run it", name, p)
		}
	}
}

// Every dashboard parses and each panel queries the provisioned Prometheus
// datasource with a non-empty expression.
func TestGrafanaDashboards(t *testing.T) {
	ds := readYAML(t, "grafana/provisioning/datasources/prometheus.yml")
	sources, _ := ds["datasources"].([]any)
	if len(sources) != 1 || sources[0].(map[string]any)["uid"] != "prometheus" {
		t.Fatalf("datasources: %v", sources)
	}
	readYAML(t, "grafana/provisioning/dashboards/wasessions.yml")
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Title  string `json:"title"`
			Panels []struct {
				Title      string `json:"title"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Fatalf("%s: uid %q title %q, %d panels", f, d.UID, d.Title, len(d.Panels))
		}
		var exprs strings.Builder
		for _, p := range d.Panels {
			for _, q := range p.Targets {
				exprs.WriteString(q.Expr + "\n")
			}
		}
		// What issue 15 asks the dashboard to show, each by the metric that
		// carries it: an operator's question without a panel is a gap.
		for _, want := range []struct{ what, metric string }{
			{"sessions by status", "wasessions_sessions"},
			{"pairings per minute", "wasessions_worker_status_changes_total"},
			{"restores per minute", "wasessions_worker_restores_total"},
			{"handoff and failover durations", "wasessions_worker_takeover_seconds_bucket"},
			{"lease renewals and failures", "wasessions_worker_lease_renewals_total"},
			{"queue latency per queue", "asynq_queue_latency_seconds"},
			{"API latency per route", "wasessions_http_request_duration_seconds_bucket"},
			{"message API traffic", `route=~".*/messages.*"`},
			{"webhook deliveries by outcome", "wasessions_webhook_deliveries_total"},
			{"webhook delivery latency", "wasessions_webhook_delivery_latency_seconds_bucket"},
			{"webhook backlog", "wasessions_webhook_oldest_pending_seconds"},
		} {
			if !strings.Contains(exprs.String(), want.metric) {
				t.Errorf("%s: no panel shows %s (%s)", f, want.what, want.metric)
			}
		}
		for _, p := range d.Panels {
			if p.Datasource.UID != "prometheus" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %q: datasource %q, %d queries", f, p.Title, p.Datasource.UID, len(p.Targets))
			}
			for _, q := range p.Targets {
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("%s: panel %q has an empty query", f, p.Title)
				}
			}
		}
	}
}

// Grafana never starts with its default admin/admin: the compose service's
// entrypoint refuses an unset or short GRAFANA_ADMIN_PASSWORD before it
// hands over to Grafana's /run.sh. The script is run here with sh, as the
// container would run it (compose's $$ is a literal $).
func TestGrafanaRefusesItsDefaultPassword(t *testing.T) {
	compose := readYAML(t, "../docker-compose.yml")
	svc, _ := compose["services"].(map[string]any)["grafana"].(map[string]any)
	env, _ := svc["environment"].(map[string]any)
	if v, _ := env["GF_SECURITY_ADMIN_PASSWORD"].(string); v != "${GRAFANA_ADMIN_PASSWORD:-}" {
		t.Errorf("GF_SECURITY_ADMIN_PASSWORD is %q, want ${GRAFANA_ADMIN_PASSWORD:-} (no default password)", v)
	}
	ep, _ := svc["entrypoint"].([]any)
	if len(ep) != 4 || ep[0] != "/bin/sh" || ep[1] != "-c" {
		t.Fatalf("grafana's entrypoint is %v, want /bin/sh -c <check> grafana", ep)
	}
	script := strings.ReplaceAll(ep[2].(string), "$$", "$")
	for _, tc := range []struct {
		name, password string
		refused        bool
	}{
		{"unset", "", true},
		{"Grafana's default", "admin", true},
		{"15 characters", strings.Repeat("x", 15), true},
		{"16 characters", strings.Repeat("x", 16), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", script, "grafana")
			cmd.Env = []string{"PATH=/usr/bin:/bin", "GF_SECURITY_ADMIN_PASSWORD=" + tc.password}
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the script ended with %v, want an exit status (%s)", err, out)
			}
			refused := exit.ExitCode() == 1 && strings.Contains(string(out), "set GRAFANA_ADMIN_PASSWORD")
			// Let through, it execs Grafana's /run.sh, which this machine lacks.
			passed := exit.ExitCode() == 127 && strings.Contains(string(out), "/run.sh")
			if tc.refused && !refused || !tc.refused && !passed {
				t.Errorf("password %q: exit %d, %q; want refused=%v", tc.password, exit.ExitCode(), out, tc.refused)
			}
		})
	}
}
