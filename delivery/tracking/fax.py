"""Fax gateway reports → delivery parts: Phaxio callbacks and polling end in the same place.

A fax id is the reference of one fax part (:class:`delivery.models.Part`); what Phaxio
says about it (:class:`~delivery.channels.fax_phaxio.FaxStatus`) becomes one provider
report, which moves that part only forward and the delivery with it once its parts agree.
Success delivers the part with fax confirmation; a busy line or no answer defers it, so
the delivery becomes deferred and the worker sends that part again (the parts already
accepted or delivered are passed as ``Parcel.sent_parts`` and skipped). A duplicated or
late report is recorded once, or only noted; it never moves a delivery backwards.

A fax whose send was ambiguous has no part to report on: its delivery is unknown and is
settled by a person, never re-sent by the worker.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from delivery.channels.fax_phaxio import FaxStatus, PhaxioFax
from delivery.errors import ChannelSetupError, NotFoundError, PermanentError, TransientError
from delivery.models import ChannelName, DeliveryState
from delivery.outbox import Artefact
from delivery.store.tracking import Report, TrackingStore

UNKNOWN_FAX = "unknown fax"  # no fax part of ours has this id
UNDER_WAY = "under way"  # polled: Phaxio is still sending it; nothing recorded
TRANSIENT = "transient error"  # polled: Phaxio did not answer usefully; asked again next time
REFUSED = "refused"  # polled: Phaxio refused the question about this fax (e.g. not found)
NOT_PHAXIO = "not a Phaxio fax"  # a fax part sent by another gateway (e-mail to fax)


def apply_status(
    store: TrackingStore,
    fax_id: str,
    status: FaxStatus,
    *,
    actor: str,
    evidence: Artefact | None,
) -> str:
    """Record what Phaxio says about fax ``fax_id``; the outcome of the report.

    The outcome is the delivery's new state, "noted" (a part moved, or a late or
    still-under-way report was written down), "already recorded", or "unknown fax".
    """
    if store.find_part(fax_id, ChannelName.FAX) is None:
        return UNKNOWN_FAX
    report = Report(
        ref=fax_id,
        state=status.state,
        proof=status.proof,
        detail=status.detail,
        provider_ref=fax_id,
        artefacts=(evidence,) if evidence is not None else (),
    )
    try:
        return store.report(report, actor=actor)
    except NotFoundError:  # the part was replaced by a re-send meanwhile
        return UNKNOWN_FAX


async def poll_phaxio(store: TrackingStore, channel: PhaxioFax, *, actor: str) -> Counter[str]:
    """Ask Phaxio about every fax part still accepted, and apply each answer.

    A fax still under way is not recorded (a poll every few minutes would fill the
    ledger); a transient error or a refusal about one fax is counted and that fax is asked
    about again next time. A refusal of the credentials (ChannelSetupError) stops the poll.
    """
    outcomes: Counter[str] = Counter()
    parts = await asyncio.to_thread(store.parts_in, ChannelName.FAX, [DeliveryState.ACCEPTED])
    for part in parts:
        if not part.ref.isdigit():
            outcomes[NOT_PHAXIO] += 1
            continue
        try:
            status = await channel.status(part.ref)
        except TransientError:
            outcomes[TRANSIENT] += 1
            continue
        except ChannelSetupError:
            raise
        except PermanentError:
            outcomes[REFUSED] += 1
            continue
        if status.state is None:
            outcomes[UNDER_WAY] += 1
            continue
        outcome = await asyncio.to_thread(
            apply_status, store, part.ref, status, actor=actor, evidence=None
        )
        outcomes[outcome] += 1
    return outcomes
