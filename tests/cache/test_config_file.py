"""The --config YAML file: the flags' long names as keys; command-line flags win; bad files are clear errors."""
from __future__ import annotations

import pytest

from cache import config
from cache.config import SettingsError


def test_file_keys_are_flag_names_and_flags_win(tmp_path):
    path = tmp_path / "cache.yaml"
    path.write_text('listen: ["127.0.0.1:5353"]\nkube-dns: "10.96.0.10"\nsuccess-ttl: 10\ndenial-ttl: 2\n'
                    'udp-batch: false\nforward: "corp.example=udp://10.0.0.2:53"\n')
    settings, _ = config.load(["--config", str(path), "--success-ttl", "20", "--resolv-conf", "/dev/null"],
                              environ={})
    assert settings.listen == ("127.0.0.1:5353",)
    assert (settings.limits.success_ttl, settings.limits.denial_ttl, settings.udp_batch) == (20, 2, False)
    assert settings.forward == ("corp.example=udp://10.0.0.2:53",)


@pytest.mark.parametrize("text, message", [
    ("success-ttl: lots\n", "success-ttl must be a number"),
    ("sucess-ttl: 5\n", "unknown key"),
    ("- a\n- b\n", "expected a mapping"),
    ("listen: [1, 2]\n", "listen must be a list of strings"),
    ("{not yaml\n", "not YAML"),
    ("allow-wildcard: yes please\n", "allow-wildcard must be true or false"),
])
def test_bad_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "cache.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        config.load(["--config", str(path), "--kube-dns", "10.96.0.10", "--resolv-conf", "/dev/null"], environ={})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SettingsError, match="No such file"):
        config.load(["--config", str(tmp_path / "absent.yaml"), "--kube-dns", "10.96.0.10"], environ={})
