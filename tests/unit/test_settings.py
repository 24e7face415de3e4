import pytest

from kemi.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0" and s.redis_timeout_ms == 250


@pytest.mark.parametrize("env, words", [
    ({"REDIS_TIMEOUT_MS": "fast"}, "REDIS_TIMEOUT_MS='fast': expected a whole number"),
    ({"REDIS_TIMEOUT_MS": "0"}, "REDIS_TIMEOUT_MS=0: expected 1..60000"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL='http://x'"),
])
def test_bad_settings_name_the_variable(env, words):
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(".", r"\.")):
        Settings.from_env(env)
