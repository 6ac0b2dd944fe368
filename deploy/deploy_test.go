// Package deploy holds the files operators deploy with: Grafana dashboards,
// Prometheus rules and scrape config. No Docker engine runs in the test
// environment, so these tests check what can be checked without one: the
// files parse, and the compose profile mounts files that exist.
package deploy

import (
	"encoding/json"
	"os"
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
