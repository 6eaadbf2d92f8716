"""Settings, built once at the edge (CLI, worker) and passed down.

Sources, strongest first: arguments, environment (``SOLIDARITY_``, nested with ``__``),
``.env``, a TOML file (``solidarity.toml`` in the working folder, or the file named by
``SOLIDARITY_CONFIG``), then the embedded defaults. No setting is needed to run.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from delivery.address import envelope_type
from delivery.errors import ConfigurationError
from delivery.outbox_s3 import CONNECT_TIMEOUT, MAX_ATTEMPTS, READ_TIMEOUT, S3Location

PACKAGE_ROOT = Path(__file__).resolve().parent
SHIPPED_TEMPLATES = PACKAGE_ROOT.parent / "templates"
S3_SCHEME = "s3://"
# S3's rules for a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, a letter
# or digit at each end, no two dots in a row, not an IP address
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SmtpSecurity(enum.StrEnum):
    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS; refused if not offered
    TLS = "tls"  # implicit TLS from the first byte (port 465)
    NONE = "none"  # clear text; only when an operator asks for it


class SmtpSettings(BaseModel):
    host: str = ""
    port: int = 587  # 465 when security is tls and no port is given
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout: float = Field(default=30.0, gt=0)  # every wait, the reply to the final dot too

    @model_validator(mode="after")
    def _implicit_tls_port(self) -> SmtpSettings:
        if self.security is SmtpSecurity.TLS and "port" not in self.model_fields_set:
            self.port = 465
        return self


class SesSettings(BaseModel):
    """Amazon SES (API v2) instead of SMTP; credentials come from the usual AWS sources."""

    region: str = ""  # set to send e-mail through SES
    endpoint_url: str = ""  # another SES-compatible endpoint (a local one in tests)
    configuration_set: str = ""  # where SES publishes delivery, bounce and complaint events
    queue_url: str = ""  # the SQS queue those events reach (directly or through SNS)


class FaxGateway(enum.StrEnum):
    SPOOL = "spool"  # fax-ready PDFs and job files in the outbox (the default)
    PHAXIO = "phaxio"  # Phaxio / Sinch Fax HTTP API v2.1
    EMAIL = "email"  # e-mail-to-fax: the PDF attached to <number>@<email_domain>, via SMTP


class PhaxioSettings(BaseModel):
    api_key: str = ""
    api_secret: SecretStr = SecretStr("")
    callback_token: SecretStr = SecretStr("")  # the account's callback token, for signatures
    callback_url: str = ""  # where `solidarity serve` is reachable from Phaxio
    base_url: str = "https://api.phaxio.com/v2.1"
    timeout: float = Field(default=60.0, gt=0)
    max_pages: int = Field(default=50, ge=1)  # pages per fax; longer bundles are split


class FaxSettings(BaseModel):
    gateway: FaxGateway = FaxGateway.SPOOL
    phaxio: PhaxioSettings = PhaxioSettings()
    email_domain: str = ""  # e-mail-to-fax gateway domain, e.g. fax.example.net
    email_max_pages: int = Field(default=25, ge=1)  # pages per e-mailed fax; longer ones split


class PostSettings(BaseModel):
    envelope: str = "C5"  # C5 or DL (DIN 5008 window), or US10

    @field_validator("envelope")
    @classmethod
    def _known_envelope(cls, value: str) -> str:
        return envelope_type(value).code


class LimitSettings(BaseModel):
    """How hard the worker may press on any one destination."""

    connections: int = Field(default=8, ge=1)  # deliveries in flight at once, all channels
    per_domain_concurrency: int = Field(default=2, ge=1)  # e-mails in flight to one domain
    per_domain_per_minute: float = Field(default=60.0, gt=0)  # e-mails a minute to one domain


class ServeSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=0, le=65535)


class ImapSettings(BaseModel):
    host: str = ""
    port: int = 993
    username: str = ""
    password: SecretStr = SecretStr("")
    folder: str = "INBOX"


class IntakeSettings(BaseModel):
    max_body_chars: int = Field(default=20_000, ge=1)
    max_field_chars: int = Field(default=200, ge=1)


class ReviewSettings(BaseModel):
    long_text_chars: int = Field(default=3_000, ge=1)


class RenderSettings(BaseModel):
    processes: int = Field(default=0, ge=0)  # 0: one per core
    volume_pages: int = Field(default=80, ge=10)  # pages per volume: ~3 MB of memory per page
    cpu_seconds: int = Field(default=600, ge=1)  # per render job, enforced by the kernel
    memory_mb: int = Field(default=2_000, ge=200)  # address space (not RSS) per render process
    wall_seconds: float = Field(default=900.0, gt=0)  # per render job, from the parent


class EmailSettings(BaseModel):
    max_attachment_mb: float = Field(default=10.0, gt=0)  # one attached file at most
    max_message_mb: float = Field(default=20.0, gt=0)  # one e-mail at most, attachments included


class WorkerSettings(BaseModel):
    """How workers share the work: leases on what they claim, and how they stop."""

    lease_seconds: float = Field(default=60.0, gt=0)  # a claim lives this long unless renewed
    render_attempts: int = Field(default=3, ge=1)  # renders that killed their worker, at most
    grace_seconds: float = Field(default=30.0, ge=0)  # after SIGTERM, to finish what is under way


class S3Settings(BaseModel):
    """How to reach the bucket of an ``s3://`` outbox; credentials: the usual AWS sources."""

    endpoint_url: str = ""  # MinIO or another S3-compatible store; empty: AWS itself
    region: str = ""  # empty: AWS_REGION, AWS_DEFAULT_REGION or the AWS config file
    workdir: Path | None = None  # local scratch (renders, reject files); default: a temp folder
    connect_timeout: float = Field(default=CONNECT_TIMEOUT, gt=0)  # seconds to connect
    read_timeout: float = Field(default=READ_TIMEOUT, gt=0)  # seconds S3 may stay silent
    max_attempts: int = Field(default=MAX_ATTEMPTS, ge=1)  # tries of each request, the first too


class RetentionSettings(BaseModel):
    """How long supporters' data stays once the deliveries carrying it are over."""

    days: int = Field(default=90, ge=1)  # after the last delivery of a bundle ended


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SOLIDARITY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        toml_file="solidarity.toml",
    )

    outbox: str = "outbox"  # a folder, or s3://bucket/prefix
    database_url: str = ""
    s3: S3Settings = S3Settings()
    templates: Path = SHIPPED_TEMPLATES
    smtp: SmtpSettings = SmtpSettings()
    imap: ImapSettings = ImapSettings()  # the bounce mailbox
    ses: SesSettings = SesSettings()
    fax: FaxSettings = FaxSettings()
    post: PostSettings = PostSettings()
    limits: LimitSettings = LimitSettings()
    serve: ServeSettings = ServeSettings()
    intake: IntakeSettings = IntakeSettings()
    review: ReviewSettings = ReviewSettings()
    render: RenderSettings = RenderSettings()
    email: EmailSettings = EmailSettings()
    retention: RetentionSettings = RetentionSettings()
    worker: WorkerSettings = WorkerSettings()
    actor: str = "operator"
    _scratch: Path | None = PrivateAttr(default=None)

    @field_validator("outbox")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        parts = _s3_parts(value)
        if parts is not None:
            bucket = parts[0]
            if not _valid_bucket_name(bucket):
                raise ValueError(
                    f"{value!r}: {bucket!r} is not an S3 bucket name (3 to 63 lowercase"
                    " letters, digits, dots and hyphens, a letter or digit at each end, not"
                    " an IP address)"
                )
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if self.database_url:
            return self
        if self.outbox_location is not None:
            raise ValueError(
                f"database_url: the outbox is in S3 ({self.outbox_label}), so the default"
                " SQLite file inside it cannot be used; set database_url"
                " (SOLIDARITY_DATABASE_URL), e.g. postgresql://USER:PASSWORD@HOST/DB or"
                " sqlite:///PATH"
            )
        self.database_url = f"sqlite:///{Path(self.outbox) / 'solidarity.db'}"
        return self

    @property
    def outbox_location(self) -> S3Location | None:
        """The bucket and prefix of an ``s3://`` outbox and how to reach it; None for a folder."""
        parts = _s3_parts(self.outbox)
        if parts is None:
            return None
        bucket, prefix = parts
        return S3Location(
            bucket=bucket, prefix=prefix, endpoint_url=self.s3.endpoint_url, region=self.s3.region
        )

    @property
    def outbox_label(self) -> str:
        """The outbox as an operator names it: its folder, or ``s3://bucket/prefix``."""
        parts = _s3_parts(self.outbox)
        if parts is None:
            return str(Path(self.outbox))
        return S3_SCHEME + "/".join(part for part in parts if part)

    @property
    def outbox_path(self) -> Path:
        """The outbox's folder on this disk.

        With an S3 outbox, the local scratch folder instead (``s3.workdir``, or a private
        temporary folder made on first use): files that stay on this machine go there.
        """
        if self.outbox_location is None:
            return Path(self.outbox)
        if self.s3.workdir is not None:
            return self.s3.workdir
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="solidarity-scratch-"))
            weakref.finalize(self, shutil.rmtree, self._scratch, ignore_errors=True)
        return self._scratch

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls),
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``config_file`` names a TOML file to read instead of the default."""
    if config_file is not None and not config_file.is_file():
        raise ConfigurationError(f"{config_file}: settings file not found")
    try:
        if config_file is None:
            return Settings(**overrides)

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        return _FromFile(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(err["loc"], err["msg"]) for err in exc.errors())
        source = config_file or "environment, .env or solidarity.toml"
        raise ConfigurationError(f"settings ({source}): {problems}") from exc


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One validation error as ``setting: reason`` (a whole-settings check names its own)."""
    reason = msg.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {reason}" if loc else reason


def _s3_parts(outbox: str) -> tuple[str, str] | None:
    """The bucket and key prefix of ``s3://bucket/prefix``; None for a local folder."""
    if outbox[: len(S3_SCHEME)].lower() != S3_SCHEME:
        return None
    bucket, _, prefix = outbox[len(S3_SCHEME) :].partition("/")
    return bucket, "/".join(part for part in prefix.split("/") if part)


def _valid_bucket_name(name: str) -> bool:
    if not _BUCKET.fullmatch(name) or ".." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False
