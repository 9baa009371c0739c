"""app.auth and app.settings: loopback by default, password rules, settings from the environment."""

from __future__ import annotations

import pytest

from app import auth
from app.settings import configured_password, load_settings, secrets_password


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_loopback_addresses(address):
    assert auth.is_loopback(address)
    auth.check_bind(address, None)


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.168.1.5", "::", "example.org"])
def test_other_addresses_need_a_password(address):
    assert not auth.is_loopback(address)
    with pytest.raises(auth.BindRefused, match="GCE_LAB_PASSWORD"):
        auth.check_bind(address, None)
    auth.check_bind(address, "s3cret")


def test_password_check():
    assert auth.password_ok("anything", None)
    assert auth.password_ok("s3cret", "s3cret")
    assert not auth.password_ok("S3cret", "s3cret")
    assert not auth.password_ok(None, "s3cret")
    assert [auth.failure_delay(n) for n in range(6)] == [0, 1, 2, 4, 8, 8]


def test_password_from_env_then_secrets(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('password = "from-secrets"\n')
    assert secrets_password((secrets,)) == "from-secrets"
    assert configured_password({"GCE_LAB_PASSWORD": "from-env"}, (secrets,)) == "from-env"
    assert configured_password({}, (secrets,)) == "from-secrets"
    assert configured_password({}, (tmp_path / "missing.toml",)) is None
    (tmp_path / "bad.toml").write_text("password = [unclosed")
    assert secrets_password((tmp_path / "bad.toml",)) is None


def test_settings_from_env(tmp_path):
    s = load_settings({"GCE_LAB_TEACHING": "1", "GCE_LAB_SESSION_CAP": "5", "GCE_LAB_HOME": str(tmp_path)}, ())
    assert s.teaching and s.session_cap == 5 and s.password is None
    assert s.store_key == f"home:{tmp_path}"
    assert load_settings({"GCE_LAB_DB_URL": "sqlite:///x.db"}, ()).store_key == "sqlite:///x.db"
    with pytest.raises(ValueError, match="GCE_LAB_SESSION_CAP"):
        load_settings({"GCE_LAB_SESSION_CAP": "-1"}, ())
