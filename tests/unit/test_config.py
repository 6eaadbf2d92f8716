"""Settings: nothing needed to run; environment, .env and TOML when an operator wants them."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.config import SHIPPED_TEMPLATES, Settings, SmtpSecurity, load_settings
from delivery.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SOLIDARITY_OUTBOX", "SOLIDARITY_DATABASE_URL", "SOLIDARITY_SMTP__HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_need_no_configuration() -> None:
    settings = Settings()
    assert settings.outbox == "outbox"
    assert settings.database_url == "sqlite:///outbox/solidarity.db"
    assert settings.templates == SHIPPED_TEMPLATES
    assert settings.smtp.host == ""
    assert settings.smtp.security is SmtpSecurity.STARTTLS


def test_environment_with_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLIDARITY_OUTBOX", "/srv/spool")
    monkeypatch.setenv("SOLIDARITY_SMTP__HOST", "mail.example.org")
    monkeypatch.setenv("SOLIDARITY_SMTP__SECURITY", "tls")
    monkeypatch.setenv("SOLIDARITY_SMTP__PASSWORD", "s3cret")
    settings = Settings()
    assert settings.database_url == "sqlite:////srv/spool/solidarity.db"
    assert settings.smtp.host == "mail.example.org"
    assert settings.smtp.security is SmtpSecurity.TLS
    assert "s3cret" not in repr(settings)
    assert settings.smtp.password.get_secret_value() == "s3cret"


def test_dotenv_file_in_the_working_folder(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SOLIDARITY_DATABASE_URL=sqlite:///elsewhere.db\n")
    assert Settings().database_url == "sqlite:///elsewhere.db"


def test_toml_settings_file(tmp_path: Path) -> None:
    (tmp_path / "solidarity.toml").write_text(
        'outbox = "spool"\n[smtp]\nhost = "smtp.example.org"\nport = 465\n'
    )
    settings = Settings()
    assert (settings.outbox, settings.smtp.host, settings.smtp.port) == (
        "spool",
        "smtp.example.org",
        465,
    )
    named = tmp_path / "other.toml"
    named.write_text('outbox = "other-spool"\n')
    assert load_settings(named).outbox == "other-spool"


def test_environment_beats_the_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "solidarity.toml").write_text('outbox = "from-toml"\n')
    monkeypatch.setenv("SOLIDARITY_OUTBOX", "from-env")
    assert Settings().outbox == "from-env"


def test_a_missing_settings_file_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"nowhere\.toml: settings file not found"):
        load_settings(Path("nowhere.toml"))


def test_an_unknown_smtp_security_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLIDARITY_SMTP__SECURITY", "opportunistic")
    with pytest.raises(ConfigurationError, match=r"smtp\.security: Input should be"):
        load_settings()


def test_implicit_tls_listens_on_465_unless_a_port_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOLIDARITY_SMTP__HOST", "smtp.example.org")
    monkeypatch.setenv("SOLIDARITY_SMTP__SECURITY", "tls")
    assert load_settings().smtp.port == 465
    monkeypatch.setenv("SOLIDARITY_SMTP__PORT", "2465")
    assert load_settings().smtp.port == 2465
    monkeypatch.setenv("SOLIDARITY_SMTP__SECURITY", "starttls")
    monkeypatch.delenv("SOLIDARITY_SMTP__PORT")
    assert load_settings().smtp.port == 587


def test_an_unknown_envelope_type_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLIDARITY_POST__ENVELOPE", "B4")
    with pytest.raises(ConfigurationError, match=r"post\.envelope: .*unknown envelope type 'B4'"):
        load_settings()
    monkeypatch.setenv("SOLIDARITY_POST__ENVELOPE", "us #10")
    assert load_settings().post.envelope == "US10"
