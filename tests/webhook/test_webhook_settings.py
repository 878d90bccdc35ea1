"""Settings from environment variables and a YAML file, validated at start with errors that name the setting."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.config import ConfigError, DNSOption, Settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_documented_ones():
    settings = Settings()
    assert settings.local_ip == "169.254.20.10"
    assert settings.cluster_domain == "cluster.local"
    assert settings.ndots == 5
    assert settings.extra_options == ()
    assert settings.fallback_nameserver is None
    assert settings.excluded_namespaces == {"kube-system", "localdns-system"}
    assert Settings.from_env({}) == settings


def test_every_environment_variable():
    settings = Settings.from_env({
        "LOCALDNS_LOCAL_IP": "169.254.0.53",
        "LOCALDNS_CLUSTER_DOMAIN": "corp.internal.",
        "LOCALDNS_NDOTS": "2",
        "LOCALDNS_EXTRA_OPTIONS": "single-request-reopen, timeout:1",
        "LOCALDNS_FALLBACK_NAMESERVER": "10.96.0.10",
        "LOCALDNS_EXCLUDED_NAMESPACES": "kube-system,monitoring",
    })
    assert settings == Settings(local_ip="169.254.0.53", cluster_domain="corp.internal", ndots=2,
                                extra_options=(DNSOption("single-request-reopen"), DNSOption("timeout", "1")),
                                fallback_nameserver="10.96.0.10",
                                excluded_namespaces=frozenset({"kube-system", "monitoring"}))


@pytest.mark.parametrize("value", ["", "off", "none", "OFF"])
def test_fallback_can_be_switched_off_explicitly(value):
    assert Settings.from_env({"LOCALDNS_FALLBACK_NAMESERVER": value}).fallback_nameserver is None


def test_empty_excluded_namespaces_excludes_none():
    assert Settings.from_env({"LOCALDNS_EXCLUDED_NAMESPACES": ""}).excluded_namespaces == frozenset()


def test_yaml_file_then_environment_overrides(tmp_path):
    config = tmp_path / "webhook.yaml"
    config.write_text("local_ip: 169.254.0.53\nndots: 3\nextra_options: [edns0, {name: timeout, value: 2}]\n"
                      "excluded_namespaces: [kube-system]\n")
    settings = Settings.from_env({"LOCALDNS_CONFIG": str(config), "LOCALDNS_NDOTS": "1"})
    assert settings.local_ip == "169.254.0.53"
    assert settings.ndots == 1  # the variable wins over the file
    assert settings.extra_options == (DNSOption("edns0"), DNSOption("timeout", "2"))
    assert settings.excluded_namespaces == {"kube-system"}


@pytest.mark.parametrize("environ, fragment", [
    ({"LOCALDNS_LOCAL_IP": "169.254.20"}, "local_ip '169.254.20' is not an IP address"),
    ({"LOCALDNS_FALLBACK_NAMESERVER": "kube-dns"}, "fallback_nameserver 'kube-dns' is not an IP address"),
    ({"LOCALDNS_FALLBACK_NAMESERVER": "169.254.20.10"}, "must differ from local_ip"),
    ({"LOCALDNS_CLUSTER_DOMAIN": "Cluster_Local"}, "cluster_domain 'Cluster_Local' is not a valid DNS name"),
    ({"LOCALDNS_NDOTS": "five"}, "ndots"),
    ({"LOCALDNS_NDOTS": "16"}, "ndots must be an integer from 0 to 15"),
    ({"LOCALDNS_NDOTS": "-1"}, "ndots"),
    ({"LOCALDNS_EXTRA_OPTIONS": "ndots:2"}, "use ndots (LOCALDNS_NDOTS)"),
    ({"LOCALDNS_EXTRA_OPTIONS": ":1"}, "extra_options entry ':1'"),
    ({"LOCALDNS_EXCLUDED_NAMESPACES": "kube-system,Bad_NS"}, "excluded_namespaces entry 'Bad_NS'"),
    ({"LOCALDNS_CONFIG": "/nonexistent/localdns.yaml"}, "cannot read /nonexistent/localdns.yaml"),
])
def test_bad_settings_are_refused_naming_the_setting(environ, fragment):
    with pytest.raises(ConfigError, match=None) as caught:
        Settings.from_env(environ)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("text, fragment", [
    ("localip: 1.2.3.4\n", "unknown key(s) localip"),
    ("- a\n- b\n", "must hold a mapping"),
    ("ndots: [1]\n", "ndots"),
    ("local_ip: 3\n", "local_ip: expected a string"),
    ("excluded_namespaces: {a: 1}\n", "excluded_namespaces"),
    ("extra_options: [{value: 1}]\n", "extra_options"),
    ("ndots: true\n", "ndots"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_bad_yaml_file_is_refused_naming_the_key(tmp_path, text, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"LOCALDNS_CONFIG": str(config)})
    assert fragment in str(caught.value)


def test_empty_yaml_file_means_defaults(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing set\n")
    assert Settings.from_env({"LOCALDNS_CONFIG": str(config)}) == Settings()


def test_serve_stops_at_start_with_a_clear_error(tls_files):
    env = {**os.environ, "LOCALDNS_NDOTS": "many"}
    done = subprocess.run([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", "0",
                           "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "ndots" in done.stderr and "'many'" in done.stderr


def test_serve_refuses_unreadable_certificate_files(tmp_path):
    done = subprocess.run([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", "0",
                           "--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(tmp_path / "missing.key")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "missing.crt" in done.stderr
