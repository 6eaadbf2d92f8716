"""Campaign types to JSON columns and back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from delivery.models import (
    Address,
    Cadence,
    Case,
    ChannelName,
    Fallback,
    Format,
    MessageKind,
    Organisation,
    Recipient,
    RecipientKind,
)


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(str(v) for v in value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def to_json(obj: Organisation | Case | Recipient) -> dict[str, Any]:
    data = _plain(asdict(obj))
    data.pop("recipients", None)
    return dict(data)


def _address(data: Mapping[str, Any] | None) -> Address | None:
    return Address(**data) if data else None


def organisation_from_json(data: Mapping[str, Any]) -> Organisation:
    fields = dict(data)
    address = _address(fields.pop("address"))
    assert address is not None
    return Organisation(address=address, **fields)


def recipient_from_json(data: Mapping[str, Any]) -> Recipient:
    fields = dict(data)
    return Recipient(
        case=fields.pop("case"),
        slug=fields.pop("slug"),
        kind=RecipientKind(fields.pop("kind")),
        channels=tuple(ChannelName(c) for c in fields.pop("channels")),
        format=Format(fields.pop("format")),
        cadence=Cadence(fields.pop("cadence")),
        address=_address(fields.pop("address", None)),
        extra=dict(fields.pop("extra", {})),
        **fields,
    )


def case_from_json(data: Mapping[str, Any], recipients: tuple[Recipient, ...]) -> Case:
    fields = dict(data)
    return Case(
        auto_approve=frozenset(MessageKind(k) for k in fields.pop("auto_approve")),
        danger_words=tuple(fields.pop("danger_words")),
        fallback=Fallback(fields.pop("fallback", Fallback.REVIEW)),
        recipients=recipients,
        **fields,
    )
