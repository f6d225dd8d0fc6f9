"""The control plane's settings file (/etc/flex/server.toml, or $FLEX_SERVER_CONFIG): flags beat FLEX_SERVER_*,
which beat the file, which beats the defaults; a bad file is one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flex.controlplane.config import Settings, config_file


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "server.toml"
    monkeypatch.setenv("FLEX_SERVER_CONFIG", str(path))
    for key in list(os.environ):
        if key.startswith("FLEX_SERVER_") and key != "FLEX_SERVER_CONFIG":
            monkeypatch.delenv(key)
    return path


def test_the_file_is_read_and_env_and_arguments_win(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text('listen = "0.0.0.0:9000"\nheartbeat_timeout = 45.0\npublic_url = "https://flex.example"\n'
                    'proxy_trusted_origins = "10.0.0.0/8"\n')
    s = Settings()
    assert (s.listen, s.heartbeat_timeout, s.public_url, s.proxy_trusted_origins) == \
        ("0.0.0.0:9000", 45.0, "https://flex.example", "10.0.0.0/8")
    monkeypatch.setenv("FLEX_SERVER_LISTEN", "127.0.0.1:9001")
    assert Settings().listen == "127.0.0.1:9001"
    assert Settings(listen="127.0.0.1:9002").listen == "127.0.0.1:9002"
    assert Settings().heartbeat_timeout == 45.0


def test_a_missing_file_means_defaults_and_flex_etc_moves_it(toml: Path, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    assert Settings().listen == "127.0.0.1:8080"
    monkeypatch.delenv("FLEX_SERVER_CONFIG")
    monkeypatch.setenv("FLEX_ETC", str(tmp_path / "etc"))
    assert config_file() == tmp_path / "etc" / "server.toml"


@pytest.mark.parametrize(("text", "want"), [
    ("listen = ", "server.toml: not valid TOML"),
    ('lisen = "0.0.0.0:1"\n', "server setting 'lisen': Extra inputs are not permitted"),
    ('heartbeat_timeout = "soon"\n', "server setting 'heartbeat_timeout'"),
])
def test_a_bad_file_is_one_line_with_exit_7(toml: Path, tmp_path: Path, text: str, want: str) -> None:
    toml.write_text(text)
    r = subprocess.run([sys.executable, "-m", "flex", "server"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "FLEX_HOME": str(tmp_path / "home")})
    assert r.returncode == 7, r.stderr
    assert want in r.stderr.splitlines()[0] and "Traceback" not in r.stderr
