"""app.auth and app.settings: loopback by default, password rules, guessing kept slow, settings
from the environment."""

from __future__ import annotations

import threading

import pytest

from app import auth
from app.settings import configured_password, load_settings, public_hosts, secrets_password


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
    assert [auth.failure_delay(n) for n in range(10)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]


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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_count_per_address_not_per_session():
    clock = Clock()
    t = auth.Throttle(clock)
    # every attempt as from a fresh session: only the address is known
    assert t.attempt("10.0.0.1", "a", "s3cret") == auth.Attempt(False, True, 0.0, 1)  # a typo is free
    second = t.attempt("10.0.0.1", "b", "s3cret")
    assert (second.checked, second.wait, second.failures) == (True, 1.0, 2)
    early = t.attempt("10.0.0.1", "s3cret", "s3cret")  # even the right one is not heard yet
    assert (early.ok, early.checked, early.wait) == (False, False, 1.0)
    assert early.message() == "Too many wrong passwords: the next try is heard in 1 s."
    assert t.attempt("10.0.0.2", "s3cret", "s3cret").ok  # another address is not held back
    clock.now += 1.0
    third = t.attempt("10.0.0.1", "c", "s3cret")
    assert (third.checked, third.wait, third.failures) == (True, 2.0, 3)
    guesses = 3
    clock.now += 2.0
    start = clock.now
    while clock.now - start < 20.0:  # the 20 s: fresh sessions made 96 guesses
        guesses += t.attempt("10.0.0.1", "x", "s3cret").checked
        clock.now += 0.25
    assert guesses == 6  # 3 above, then after 2, 4 and 8 s more
    clock.now += 60
    assert t.attempt("10.0.0.1", "s3cret", "s3cret").ok
    assert t.attempt("10.0.0.1", "y", "s3cret").wait == 0  # a right password resets the count


def test_a_count_is_forgotten_after_quiet_minutes():
    clock = Clock()
    t = auth.Throttle(clock)
    for _ in range(4):
        clock.now += 100
        t.attempt("10.0.0.1", "x", "s3cret")
    assert t.wait("10.0.0.1") == 4.0  # the 4th wrong one in a row, however far apart
    clock.now += 4.0
    assert t.wait("10.0.0.1") == 0
    clock.now += auth.Throttle.FORGET_S + 1
    assert t.attempt("10.0.0.1", "x", "s3cret").failures == 1


def test_many_addresses_together_are_slowed_down_too():
    clock = Clock()
    t = auth.Throttle(clock)
    for i in range(auth.Throttle.GLOBAL_FREE):
        assert t.attempt(f"10.1.0.{i}", "x", "s3cret").checked
    fresh = t.attempt("10.2.0.1", "x", "s3cret")
    assert not fresh.checked and fresh.wait == auth.Throttle.GLOBAL_GAP_S
    clock.now += auth.Throttle.GLOBAL_GAP_S
    assert t.attempt("10.2.0.1", "x", "s3cret").checked
    checked = 0
    for step in range(20):  # 20 addresses, one guess each, within 10 s
        checked += t.attempt(f"10.3.0.{step}", "x", "s3cret").checked
        clock.now += 0.5
    assert checked == 4  # one every 2 s


def test_simultaneous_sessions_from_one_address_get_one_guess():
    t = auth.Throttle(Clock())  # frozen clock: nothing waits out its delay
    t.attempt("10.0.0.1", "x", "s3cret")  # the free typo
    results = []
    threads = [threading.Thread(target=lambda: results.append(t.attempt("10.0.0.1", "x", "s3cret").checked)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 19 + [True]


def test_public_host_names():
    assert public_hosts({"GCE_LAB_PUBLIC_HOST": " Lab.Example.org., ,lab2.example.org"}) == ("lab.example.org", "lab2.example.org")
    assert public_hosts({}) == ()
    for bad in ("http://lab.example.org", "lab.example.org:443", "lab example", "evil/x", "x" * 300):
        with pytest.raises(ValueError, match=r"GCE_LAB_PUBLIC_HOST: .* is not a host name") as exc:
            public_hosts({"GCE_LAB_PUBLIC_HOST": bad})
        assert len(str(exc.value)) < 300
