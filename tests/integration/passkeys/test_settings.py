"""The WebAuthn settings: defaults from PUBLIC_URL, and one-line errors naming the variable for values that cannot
work (a relying party id that is not a domain, an origin that is not one or not on the relying party)."""

from __future__ import annotations

import pytest

from accounts.config import ConfigError, Settings

GOOD = [
    ({}, "127.0.0.1", ["http://127.0.0.1:8000"]),
    ({"PUBLIC_URL": "https://accounts.example.com/base/"}, "accounts.example.com", ["https://accounts.example.com"]),
    ({"PUBLIC_URL": "http://localhost:8000"}, "localhost", ["http://localhost:8000"]),
    (
        {"WEBAUTHN_RP_ID": "Example.com", "WEBAUTHN_ORIGINS": "https://example.com, https://app.example.com:8443"},
        "example.com",
        ["https://example.com", "https://app.example.com:8443"],
    ),
    (
        {"PUBLIC_URL": "https://id.example.com", "WEBAUTHN_RP_ID": "example.com"},
        "example.com",
        ["https://id.example.com"],
    ),
    (
        {"WEBAUTHN_RP_ID": "example.com", "WEBAUTHN_ORIGINS": "https://example.com,android:apk-key-hash:abc"},
        "example.com",
        ["https://example.com", "android:apk-key-hash:abc"],
    ),
]
BAD = [
    ({"WEBAUTHN_RP_ID": "https://example.com"}, "WEBAUTHN_RP_ID: 'https://example.com' must be a domain name"),
    ({"WEBAUTHN_RP_ID": "example.com:443"}, "WEBAUTHN_RP_ID: 'example.com:443' must be a domain name"),
    ({"WEBAUTHN_RP_ID": "example.com"}, "WEBAUTHN_ORIGINS: the host of 'http://127.0.0.1:8000' is neither"),
    ({"WEBAUTHN_ORIGINS": "https://evil.example"}, "WEBAUTHN_ORIGINS: the host of 'https://evil.example' is neither"),
    (
        {"WEBAUTHN_RP_ID": "example.com", "WEBAUTHN_ORIGINS": "https://notexample.com"},
        "WEBAUTHN_ORIGINS: the host of 'https://notexample.com' is neither",
    ),
    (
        {"WEBAUTHN_RP_ID": "example.com", "WEBAUTHN_ORIGINS": "https://example.com/login"},
        "WEBAUTHN_ORIGINS: 'https://example.com/login' is not an origin",
    ),
    ({"WEBAUTHN_CHALLENGE_TTL": "5"}, "WEBAUTHN_CHALLENGE_TTL='5': expected int >= 30"),
    ({"WEBAUTHN_RP_NAME": "a\x00b"}, "WEBAUTHN_RP_NAME="),
]


@pytest.mark.parametrize(("environ", "rp_id", "origins"), GOOD)
def test_webauthn_settings(environ: dict[str, str], rp_id: str, origins: list[str]) -> None:
    settings = Settings.from_env(environ)
    assert (settings.rp_id, settings.origins, settings.webauthn_challenge_ttl) == (rp_id, origins, 300)


@pytest.mark.parametrize(("environ", "message"), BAD)
def test_webauthn_settings_that_cannot_work(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)
