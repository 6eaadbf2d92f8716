"""The `solidarity` command: thin shells over the library.

Exit codes: 0 success, 1 operational failure, 2 bad input or usage.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import ssl
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from delivery import __version__, importer, ledger
from delivery import campaign as campaign_file
from delivery import review as review_rules
from delivery.config import FaxGateway, Settings, load_settings
from delivery.errors import DeliveryError, InputError
from delivery.models import Campaign, ChannelName, DeliveryState, Recipient, ReviewState
from delivery.outbox import Outbox, open_outbox
from delivery.store import Store
from delivery.text_output import (
    echo_json,
    show_import,
    show_review,
    show_status,
    show_trace,
    show_verify,
)
from delivery.tracking.bounces import BounceTracker, TrackReport
from delivery.tracking.mailboxes import read_imap, read_maildir, read_mbox
from delivery.worker import Worker, fall_back_to, next_channel, run_until_stopped

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    """Settings built once; the store opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.connect(self.settings.database_url)
        return self._store


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into a clear message and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except DeliveryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def progress(message: str) -> None:
    click.echo(message, err=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="solidarity")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="A TOML settings file."
)
@click.option(
    "--outbox",
    help="The outbox: a folder, or s3://BUCKET/PREFIX (default: outbox/, or SOLIDARITY_OUTBOX).",
)
@click.pass_context
@handle_errors
def main(ctx: click.Context, config_file: Path | None, outbox: str | None) -> None:
    """Carry campaign messages the last mile: intake, review, merge, deliver, track, audit.

    \b
    Example:
      solidarity campaign load campaign.toml
      solidarity messages import messages.csv --source web
      solidarity worker --once
      solidarity status
    """
    overrides: dict[str, Any] = {"outbox": outbox} if outbox else {}
    ctx.obj = Context(load_settings(config_file, **overrides))


# -- campaign -----------------------------------------------------------------------------


@main.group()
def campaign() -> None:
    """Cases and recipients.

    \b
    Example:
      solidarity campaign load campaign.toml
    """


@campaign.command("load")
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@click.pass_obj
@handle_errors
def campaign_load(obj: Context, file: Path, as_json: bool) -> None:
    """Create or update cases and recipients from a campaign file (TOML).

    Loading the same file again updates, never duplicates.

    \b
    Example:
      solidarity campaign load campaign.toml
    """
    loaded = campaign_file.load_campaign(file)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    counts = obj.store.save_campaign(
        loaded, actor=obj.settings.actor, source=str(file), sha256=digest
    )
    recipients = sum(len(c.recipients) for c in loaded.cases)
    if as_json:
        echo_json({"cases": len(loaded.cases), "recipients": recipients, **counts})
        return
    click.echo(
        f"{file}: {len(loaded.cases)} cases, {recipients} recipients"
        f" ({counts['cases_added']} cases added, {counts['cases_updated']} updated;"
        f" {counts['recipients_added']} recipients added, {counts['recipients_updated']} updated)"
    )


# -- messages -----------------------------------------------------------------------------


@main.group()
def messages() -> None:
    """Supporters' messages.

    \b
    Example:
      solidarity messages import messages.csv --source web
    """


@messages.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--source", default="", help="Where the file came from (default: the file name).")
@json_option
@click.pass_obj
@handle_errors
def messages_import(obj: Context, file: Path, source: str, as_json: bool) -> None:
    """Import a CSV or JSON Lines message file.

    Each row is imported, a duplicate (same source and external_id) or rejected with its
    line, field and reason; rejected rows are also written to outbox/rejected/ to fix and
    re-import. Exit code 2 when any row was rejected.

    \b
    Example:
      solidarity messages import messages.csv --source web
      solidarity messages import signatures.jsonl --source petition-tool --json
    """
    report = importer.import_messages(
        obj.store,
        file,
        source=source or file.stem,
        settings=obj.settings,
        progress=None if as_json else progress,
    )
    if as_json:
        echo_json(report.as_dict())
    else:
        show_import(report)
    if report.rejected_total:
        sys.exit(2)


# -- review -------------------------------------------------------------------------------


@main.group()
def review() -> None:
    """Screen, approve, reject and hold messages. Only approved messages are delivered.

    \b
    Example:
      solidarity review list --flagged
      solidarity review approve --all-clean
    """


@review.command("list")
@click.option("--flagged", is_flag=True, help="Only messages a screening rule flagged.")
@click.option("--case", help="Only this case.")
@click.option("--held", is_flag=True, help="List held messages instead of waiting ones.")
@click.option("--limit", type=int, default=200, show_default=True, help="At most this many.")
@json_option
@click.pass_obj
@handle_errors
def review_list(
    obj: Context, flagged: bool, case: str | None, held: bool, limit: int, as_json: bool
) -> None:
    """Messages waiting for a caseworker, with the rules that flagged them.

    \b
    Example:
      solidarity review list --flagged --case viktor-arkhipov
    """
    states = [ReviewState.HELD] if held else [ReviewState.PENDING]
    items = obj.store.review_list(case=case, flagged=flagged, states=states, limit=limit)
    if as_json:
        echo_json([item.__dict__ for item in items])
    else:
        show_review(items)


def _selection(
    obj: Context,
    ids: tuple[str, ...],
    *,
    clean: bool,
    rule: str | None,
    case: str | None,
    kind: str | None,
) -> list[int]:
    """Message ids named, or the waiting messages a filter selects (never both)."""
    if ids and (clean or rule or case or kind):
        raise InputError(
            "give message ids or a filter (--all-clean, --rule, --case, --kind), not both"
        )
    if ids:
        return obj.store.resolve(ids)
    if not (clean or rule):
        raise InputError(
            "give message ids, --all-clean or --rule RULE (narrowed by --case, --kind)"
        )
    if rule and rule not in review_rules.RULES:
        raise InputError(f"--rule {rule!r}: not a screening rule ({', '.join(review_rules.RULES)})")
    return obj.store.waiting(case=case, kind=kind, rule=rule, clean=clean)


def _filters(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option("--kind", help="Only messages of this kind (letter, signature, ...).")(
        command
    )
    command = click.option("--case", help="Only this case.")(command)
    return click.option("--rule", help="Waiting messages this screening rule flagged.")(command)


@review.command("approve")
@click.argument("ids", nargs=-1)
@click.option("--all-clean", is_flag=True, help="Every waiting message no rule flagged.")
@_filters
@json_option
@click.pass_obj
@handle_errors
def review_approve(
    obj: Context,
    ids: tuple[str, ...],
    all_clean: bool,
    rule: str | None,
    case: str | None,
    kind: str | None,
    as_json: bool,
) -> None:
    """Approve messages by id or external id, or the waiting messages a filter selects.

    \b
    Example:
      solidarity review approve 42 pl-0002
      solidarity review approve --all-clean --case viktor-arkhipov
      solidarity review approve --rule long-text --kind letter
    """
    targets = _selection(obj, ids, clean=all_clean, rule=rule, case=case, kind=kind)
    changed = obj.store.decide(targets, ReviewState.APPROVED, actor=obj.settings.actor)
    _decided(changed, "approved", as_json)


@review.command("reject")
@click.argument("ids", nargs=-1)
@click.option("--reason", required=True, help="Why: kept in the ledger.")
@_filters
@json_option
@click.pass_obj
@handle_errors
def review_reject(
    obj: Context,
    ids: tuple[str, ...],
    reason: str,
    rule: str | None,
    case: str | None,
    kind: str | None,
    as_json: bool,
) -> None:
    """Reject messages: they are never delivered.

    \b
    Example:
      solidarity review reject 17 --reason "contains the prisoner's home address"
      solidarity review reject --rule link --case viktor-arkhipov --reason "no links to prisons"
    """
    targets = _selection(obj, ids, clean=False, rule=rule, case=case, kind=kind)
    changed = obj.store.decide(targets, ReviewState.REJECTED, actor=obj.settings.actor, note=reason)
    _decided(changed, "rejected", as_json)


@review.command("hold")
@click.argument("ids", nargs=-1)
@click.option("--reason", default="", help="Why: kept in the ledger.")
@_filters
@json_option
@click.pass_obj
@handle_errors
def review_hold(
    obj: Context,
    ids: tuple[str, ...],
    reason: str,
    rule: str | None,
    case: str | None,
    kind: str | None,
    as_json: bool,
) -> None:
    """Set messages aside until a caseworker approves or rejects them.

    \b
    Example:
      solidarity review hold 17 18 --reason "ask the case team"
      solidarity review hold --rule wrong-script
    """
    targets = _selection(obj, ids, clean=False, rule=rule, case=case, kind=kind)
    changed = obj.store.decide(targets, ReviewState.HELD, actor=obj.settings.actor, note=reason)
    _decided(changed, "held", as_json)


def _decided(changed: int, verb: str, as_json: bool) -> None:
    if as_json:
        echo_json({verb: changed})
    else:
        click.echo(f"{changed} message{'s' if changed != 1 else ''} {verb}")


# -- bundles ------------------------------------------------------------------------------


@main.group()
def bundles() -> None:
    """Bundles: list them; retry or dissolve one whose render failed.

    \b
    Example:
      solidarity bundles list --failed
      solidarity bundles retry bnd-0f89b88cfdd728c504bb
    """


@bundles.command("list")
@click.option("--failed", is_flag=True, help="Only bundles whose render failed, with the reason.")
@click.option("--case", help="Only this case.")
@json_option
@click.pass_obj
@handle_errors
def bundles_list(obj: Context, failed: bool, case: str | None, as_json: bool) -> None:
    """Bundles with their recipient, state, messages and pages.

    \b
    Example:
      solidarity bundles list --case viktor-arkhipov
    """
    rows = obj.store.bundles_listed(state="failed" if failed else None, case=case)
    listed = [
        {
            "id": b.id,
            "case": b.case,
            "recipient": b.slug,
            "state": b.state,
            "period": b.period,
            "messages": b.message_count,
            "pages": b.pages,
            "pdf": b.pdf_path,
            "error": b.error if b.state == "failed" else "",
        }
        for b in rows
    ]
    if as_json:
        echo_json(listed)
        return
    for b in listed:
        click.echo(
            f"{b['id']}  {b['case']}/{b['recipient']}  {b['state']}  "
            f"{b['messages']} messages  {b['pages']} pages  {b['pdf']}"
        )
        if b["error"]:
            click.echo(f"    {b['error']}")
    click.echo(f"{len(listed)} bundle{'s' if len(listed) != 1 else ''}")


@bundles.command("retry")
@click.argument("bundle_ids", nargs=-1, required=True)
@json_option
@click.pass_obj
@handle_errors
def bundles_retry(obj: Context, bundle_ids: tuple[str, ...], as_json: bool) -> None:
    """Render a failed bundle again on the next worker run (say, after installing a font).

    \b
    Example:
      solidarity bundles retry bnd-0f89b88cfdd728c504bb && solidarity worker --once
    """
    for bundle_id in bundle_ids:
        obj.store.retry_bundle(bundle_id, actor=obj.settings.actor)
    if as_json:
        echo_json({"retried": list(bundle_ids)})
    else:
        click.echo(f"{len(bundle_ids)} bundle(s) will be rendered again by the next worker run")


@bundles.command("dissolve")
@click.argument("bundle_id")
@json_option
@click.pass_obj
@handle_errors
def bundles_dissolve(obj: Context, bundle_id: str, as_json: bool) -> None:
    """Give a failed bundle's messages back, to review the one that failed and bundle the rest.

    \b
    Example:
      solidarity bundles dissolve bnd-0f89b88cfdd728c504bb
      solidarity review reject 17 --reason "characters no font can print"
      solidarity worker --once --now
    """
    freed = obj.store.dissolve_bundle(bundle_id, actor=obj.settings.actor)
    if as_json:
        echo_json({"dissolved": bundle_id, "messages": freed})
    else:
        click.echo(f"bundle {bundle_id} dissolved: {freed} messages wait for the next bundle")


# -- tracking -----------------------------------------------------------------------------


@main.group()
def track() -> None:
    """Feed delivery reports back into the deliveries' states.

    \b
    Example:
      solidarity track bounces --maildir /var/mail/bounces
    """


@track.command("bounces")
@click.option(
    "--maildir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="A Maildir of bounce reports.",
)
@click.option(
    "--mbox",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An mbox file of bounce reports.",
)
@click.option(
    "--imap",
    "use_imap",
    is_flag=True,
    help="The IMAP mailbox of SOLIDARITY_IMAP__HOST, __USERNAME, __PASSWORD, __FOLDER.",
)
@json_option
@click.pass_obj
@handle_errors
def track_bounces(
    obj: Context, maildir: Path | None, mbox: Path | None, use_imap: bool, as_json: bool
) -> None:
    """Read delivery status notifications (RFC 3464) and apply them.

    A failed report with a 5.x.x status makes the delivery bounced; delivered makes it
    delivered; a delay is noted. Auto-replies are skipped. A report that cannot be read, or
    names no delivery, is quarantined under outbox/quarantine/bounces/ for a person.

    \b
    Example:
      solidarity track bounces --mbox bounces.mbox --json
    """
    if sum((maildir is not None, mbox is not None, use_imap)) != 1:
        raise InputError("track bounces: give exactly one of --maildir, --mbox or --imap")
    campaign = obj.store.campaign()
    org = campaign.organisation
    tracker = BounceTracker(
        store=obj.store,
        outbox=open_outbox(obj.settings),
        actor=obj.settings.actor,
        bounce_domain=org.bounce_domain,
        keep_addresses=(org.bounce_domain, org.email, org.reply_to),
    )
    if maildir is not None:
        report = tracker.track(read_maildir(maildir))
    elif mbox is not None:
        report = tracker.track(read_mbox(mbox))
    else:
        report = _track_imap(obj.settings, tracker)
    if as_json:
        echo_json(report.as_dict())
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing"
    click.echo(f"{report.read} reports read: {counts}")
    for path in report.quarantined:
        click.echo(f"  quarantined for a person: {path}")


def _track_imap(settings: Settings, tracker: BounceTracker) -> TrackReport:
    imap = settings.imap
    if not imap.host:
        raise InputError(
            "track bounces --imap: set SOLIDARITY_IMAP__HOST (and __USERNAME, __PASSWORD)"
        )
    fetched = read_imap(
        imap.host,
        imap.port,
        imap.username,
        imap.password.get_secret_value(),
        imap.folder,
        ssl_context=ssl.create_default_context(),
    )
    marks: dict[str, Callable[[], None]] = {}

    def pairs() -> Iterator[tuple[str, bytes]]:
        for item in fetched:
            marks[item.key] = item.done
            yield item.key, item.raw

    return tracker.track(pairs(), done=lambda key: marks.pop(key)())


@track.command("fax")
@json_option
@click.pass_obj
@handle_errors
def track_fax(obj: Context, as_json: bool) -> None:
    """Ask the fax gateway about every fax it has not settled yet, and apply the answers.

    Callbacks (`solidarity serve`) usually bring the news first; polling catches what a
    lost callback missed. Success makes a fax part delivered with fax confirmation; a busy
    line or no answer defers it, and the worker sends that part again.

    \b
    Example:
      solidarity track fax --json
    """
    settings = obj.settings
    if settings.fax.gateway is not FaxGateway.PHAXIO:
        raise InputError("track fax: set SOLIDARITY_FAX__GATEWAY=phaxio (and its API key)")

    from delivery.channels.fax_phaxio import PhaxioFax
    from delivery.tracking.fax import poll_phaxio

    async def poll() -> dict[str, int]:
        channel = PhaxioFax(settings.fax.phaxio)
        try:
            return dict(await poll_phaxio(obj.store, channel, actor=settings.actor))
        finally:
            await channel.close()

    outcomes = asyncio.run(poll())
    if as_json:
        echo_json({"outcomes": outcomes})
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "nothing to ask"
    click.echo(f"fax gateway asked: {counts}")


@track.command("ses")
@json_option
@click.pass_obj
@handle_errors
def track_ses_command(obj: Context, as_json: bool) -> None:
    """Read Amazon SES delivery, bounce, complaint and reject events from the SQS queue.

    Each event is applied to the e-mail it is about, kept as evidence with supporter
    addresses removed, then deleted from the queue. An event that cannot be read is
    quarantined under outbox/quarantine/ses/ for a person.

    \b
    Example:
      SOLIDARITY_SES__QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/ses-events \
        solidarity track ses
    """
    settings = obj.settings
    if not (settings.ses.region and settings.ses.queue_url):
        raise InputError("track ses: set SOLIDARITY_SES__REGION and SOLIDARITY_SES__QUEUE_URL")
    from delivery.tracking.ses_events import track_ses  # boto3 loads only when it is used

    org = obj.store.campaign().organisation
    report = track_ses(
        settings,
        obj.store,
        open_outbox(settings),
        keep_addresses=(org.bounce_domain, org.email, org.reply_to),
        actor=settings.actor,
    )
    if as_json:
        echo_json(report.as_dict())
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing"
    click.echo(f"{report.read} events read: {counts}")
    for path in report.quarantined:
        click.echo(f"  quarantined for a person: {path}")


# -- post ---------------------------------------------------------------------------------


@main.group()
def post() -> None:
    """Print jobs and what the mailroom or the post office says about them.

    \b
    Example:
      solidarity post mark outbox/post/20261126T101500Z-4242/status.csv
    """


@post.command("mark")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@json_option
@click.pass_obj
@handle_errors
def post_mark(obj: Context, file: Path, as_json: bool) -> None:
    """Record posted, delivered and returned envelopes from a status CSV.

    Columns: envelope, status (posted | delivered | returned), date, tracking_number,
    reason (required when returned), signed_by. Every print job has a status.csv ready to
    fill in. A bad row stops the whole file (file:line: field: reason) and nothing is
    recorded. Returned mail marks the recipient's address as suspect: their next post
    waits until a person checks it and runs `solidarity release`.

    \b
    Example:
      solidarity post mark status.csv --json
    """
    from delivery.tracking.post import mark as mark_post

    report = mark_post(obj.store, open_outbox(obj.settings), file, actor=obj.settings.actor)
    if as_json:
        echo_json(report.as_dict())
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing"
    click.echo(f"{report.rows} envelopes: {counts}")
    for who in report.suspect:
        click.echo(f"  address now suspect, post to it waits for a person: {who}")


# -- deliveries that did not arrive -------------------------------------------------------


@review.group("deliveries", invoke_without_command=True)
@click.option("--case", help="Only this case.")
@json_option
@click.pass_context
@handle_errors
def review_deliveries(ctx: click.Context, case: str | None, as_json: bool) -> None:
    """Deliveries that failed, bounced, came back or are unknown, waiting for a person.

    Without a subcommand, lists them with the channel a fallback would use. A case with
    `fallback = "auto"` moves to the next channel by itself; every other case waits here.

    \b
    Example:
      solidarity review deliveries
      solidarity review deliveries fallback dlv-3f2a... --reason "fax number confirmed"
      solidarity review deliveries resend dlv-9c1e... --reason "server log shows no copy"
    """
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    campaign = obj.store.campaign()
    rows = []
    for d in obj.store.not_arrived(case=case):
        recipient = _campaign_recipient(campaign, d.case, d.slug)
        tried = obj.store.channels_tried(d.bundle_id)
        following = next_channel(recipient, d.channel, tried) if recipient else None
        rows.append(
            {
                "delivery": d.id,
                "case": d.case,
                "recipient": d.slug,
                "channel": str(d.channel),
                "state": str(d.state),
                "reason": d.last_error,
                "updated_at": d.updated_at.isoformat(),
                "fallback": str(following) if following else "",
            }
        )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no delivery waits for a person")
        return
    for row in rows:
        nxt = f"; fallback: {row['fallback']}" if row["fallback"] else "; no other channel"
        click.echo(
            f"{row['delivery']}  {row['case']}/{row['recipient']}  {row['channel']}"
            f" {row['state'].upper()}{nxt}\n    {row['reason']}"
        )


def _campaign_recipient(campaign: Campaign, case: str, slug: str) -> Recipient | None:
    found = campaign.case(case)
    return next((r for r in found.recipients if r.slug == slug), None) if found else None


reason_option = click.option("--reason", required=True, help="Why: kept in the ledger.")


@review_deliveries.command("fallback")
@click.argument("delivery_ids", nargs=-1, required=True)
@click.option(
    "--channel",
    type=click.Choice([c.value for c in ChannelName]),
    help="The channel to use (default: the recipient's next one).",
)
@reason_option
@json_option
@click.pass_obj
@handle_errors
def review_deliveries_fallback(
    obj: Context, delivery_ids: tuple[str, ...], channel: str | None, reason: str, as_json: bool
) -> None:
    """Send the same bundle on another channel.

    \b
    Example:
      solidarity review deliveries fallback dlv-3f2a... --channel post --reason "no fax"
    """
    campaign = obj.store.campaign()
    created = {}
    for delivery_id in delivery_ids:
        d = obj.store.delivery(delivery_id)
        recipient = _campaign_recipient(campaign, d.case, d.slug)
        if recipient is None:
            raise InputError(f"delivery {d.id}: {d.case}/{d.slug} is no longer in the campaign")
        target = (
            ChannelName(channel)
            if channel
            else next_channel(recipient, d.channel, obj.store.channels_tried(d.bundle_id))
        )
        if target is None:
            raise InputError(f"delivery {d.id}: {d.case}/{d.slug} has no other channel to try")
        if target in obj.store.channels_tried(d.bundle_id):
            raise InputError(f"delivery {d.id}: its bundle already went by {target}")
        created[d.id] = fall_back_to(
            obj.store, campaign, d, target, why=reason, actor=obj.settings.actor
        )
    if as_json:
        echo_json({"fallbacks": created})
        return
    for old, new in created.items():
        click.echo(f"{old}: queued again as {new}; the worker sends it on its next run")


@review_deliveries.command("resend")
@click.argument("delivery_ids", nargs=-1, required=True)
@reason_option
@json_option
@click.pass_obj
@handle_errors
def review_deliveries_resend(
    obj: Context, delivery_ids: tuple[str, ...], reason: str, as_json: bool
) -> None:
    """Send an unknown delivery again, with the same Message-ID, by a person's decision.

    Only for `unknown`: the provider may already hold a copy, so the recipient may get
    two (with one Message-ID, which mail software can merge). The ledger records who chose.

    \b
    Example:
      solidarity review deliveries resend dlv-9c1e... --reason "server log shows no copy"
    """
    for delivery_id in delivery_ids:
        obj.store.requeue_unknown(delivery_id, reason=reason, actor=obj.settings.actor)
    if as_json:
        echo_json({"queued": list(delivery_ids)})
        return
    click.echo(f"{len(delivery_ids)} queued again; the worker sends them on its next run")


@review_deliveries.command("settle")
@click.argument("delivery_id")
@click.option(
    "--as",
    "outcome",
    required=True,
    type=click.Choice(["accepted", "delivered", "failed", "bounced"]),
    help="What the provider or the recipient confirmed.",
)
@reason_option
@json_option
@click.pass_obj
@handle_errors
def review_deliveries_settle(
    obj: Context, delivery_id: str, outcome: str, reason: str, as_json: bool
) -> None:
    """Settle an unknown delivery from what a person found out (server logs, a phone call).

    \b
    Example:
      solidarity review deliveries settle dlv-9c1e... --as delivered --reason "office confirmed"
    """
    d = obj.store.delivery(delivery_id)
    if d.state != DeliveryState.UNKNOWN:
        raise InputError(f"delivery {delivery_id} is {d.state}: only unknown ones are settled")
    obj.store.transition(
        delivery_id,
        DeliveryState(outcome),
        actor=obj.settings.actor,
        detail=f"settled by a person: {reason}",
    )
    if as_json:
        echo_json({"delivery": delivery_id, "state": outcome})
        return
    click.echo(f"{delivery_id}: {outcome}")


@review_deliveries.command("close")
@click.argument("delivery_ids", nargs=-1, required=True)
@reason_option
@json_option
@click.pass_obj
@handle_errors
def review_deliveries_close(
    obj: Context, delivery_ids: tuple[str, ...], reason: str, as_json: bool
) -> None:
    """Accept that a delivery did not arrive and will not be tried again.

    \b
    Example:
      solidarity review deliveries close dlv-3f2a... --reason "office closed down"
    """
    for delivery_id in delivery_ids:
        obj.store.record_resolution(delivery_id, f"closed: {reason}", actor=obj.settings.actor)
    if as_json:
        echo_json({"closed": list(delivery_ids)})
        return
    click.echo(f"{len(delivery_ids)} closed")


# -- serve --------------------------------------------------------------------------------


@main.command()
@click.option("--host", help="Address to listen on (default: SOLIDARITY_SERVE__HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: SOLIDARITY_SERVE__PORT, 8025).")
@click.pass_obj
@handle_errors
def serve(obj: Context, host: str | None, port: int | None) -> None:
    """Receive the fax gateway's signed status callbacks over HTTP.

    POST /callbacks/phaxio takes Phaxio's send-fax callbacks: the signature is checked with
    SOLIDARITY_FAX__PHAXIO__CALLBACK_TOKEN against SOLIDARITY_FAX__PHAXIO__CALLBACK_URL, and
    a request with a bad signature is refused (403) and changes nothing. GET /healthz
    answers when the service is up. Put it behind a TLS-terminating proxy.

    \b
    Example:
      solidarity serve --host 0.0.0.0 --port 8025
    """
    settings = obj.settings
    if not settings.fax.phaxio.callback_token.get_secret_value():
        raise InputError("serve: set SOLIDARITY_FAX__PHAXIO__CALLBACK_TOKEN to check signatures")
    from delivery.serve import run_server  # the web stack loads only for this command

    run_server(
        settings,
        obj.store,
        open_outbox(settings),
        actor=settings.actor,
        host=host or settings.serve.host,
        port=settings.serve.port if port is None else port,
    )


# -- worker and status --------------------------------------------------------------------


@main.command()
@click.option("--once", is_flag=True, help="Drain everything due now, then exit.")
@click.option(
    "--now", "on_demand", is_flag=True, help="Collect every recipient now, whatever its cadence."
)
@click.option("--poll", type=float, default=60.0, show_default=True, help="Seconds between runs.")
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Worker processes side by side; they share the work through claims in the database.",
)
@json_option
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context, once: bool, on_demand: bool, poll: float, concurrency: int, as_json: bool
) -> None:
    """Collect, merge and deliver: the async worker.

    Running it again delivers nothing twice. Several workers — this command run on many
    machines against one PostgreSQL database, or --concurrency N here — share the work:
    each claims what it renders or sends, a heartbeat keeps the claims alive, and the
    claims of a worker that stops are taken over once they expire
    (SOLIDARITY_WORKER__LEASE_SECONDS, by the database's clock). SIGTERM or Ctrl-C: no new
    run starts, what is under way gets SOLIDARITY_WORKER__GRACE_SECONDS to finish, the
    rest is given back, and the worker exits 0.

    \b
    Example:
      solidarity worker --once
      solidarity worker --poll 300 --concurrency 4
    """
    obj: Context = ctx.obj
    if concurrency > 1:
        _ = obj.store  # made and migrated once here, not by every worker at the same moment
        args = ["worker", "--poll", str(poll)]
        args += ["--once"] * once + ["--now"] * on_demand + ["--json"] * as_json
        sys.exit(_supervise(ctx, args, concurrency, once=once, as_json=as_json))
    runner = Worker(obj.settings, obj.store, progress=progress)
    summary = asyncio.run(
        run_until_stopped(runner, once=once, on_demand=on_demand, poll_seconds=poll)
    )
    if not once:
        return
    if summary is None:
        click.echo("stopped before the run was done; the rest was given back", err=True)
        return
    if as_json:
        echo_json(summary.as_dict())
    else:
        _show_run(summary.as_dict())
    if summary.errors:
        sys.exit(1)


def _show_run(summary: Mapping[str, Any]) -> None:
    deliveries: Mapping[str, int] = summary["deliveries"]
    click.echo(
        f"{summary['bundles_planned']} bundles collected, {summary['bundles_rendered']} rendered"
        f" ({summary['pages']} pages), {summary['bundles_failed']} failed; deliveries: "
        + (", ".join(f"{k} {v}" for k, v in sorted(deliveries.items())) or "none")
    )


def _supervise(
    ctx: click.Context, args: list[str], count: int, *, once: bool, as_json: bool
) -> int:
    """Run ``count`` worker processes and wait for them; SIGTERM and SIGINT are passed on.

    With --once their summaries are added up into one; the exit code is the worst of theirs.
    """
    import signal
    import subprocess

    group = ctx.find_root().params
    front = ["--config", str(group["config_file"])] if group.get("config_file") else []
    front += ["--outbox", str(group["outbox"])] if group.get("outbox") else []
    # -P: the working folder is not put on the import path, so no file there shadows ours
    command = [sys.executable, "-P", "-c", "from delivery.cli import main; main()", *front, *args]
    capture = subprocess.PIPE if once else None
    children = [
        subprocess.Popen(command, stdout=capture, text=True)  # noqa: S603  # ourselves again
        for _ in range(count)
    ]

    def pass_on(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    outputs = [child.communicate()[0] or "" for child in children]
    codes = [child.returncode for child in children]
    if once:
        totals = _added_up([json.loads(o) for o in outputs if o.strip()] if as_json else [])
        if as_json:
            echo_json(totals)
        else:
            for output in outputs:
                click.echo(output, nl=False)
    return max(codes, key=abs)


def _added_up(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {"deliveries": {}, "errors": [], "workers": len(summaries)}
    for summary in summaries:
        for key, value in summary.items():
            if key == "deliveries":
                for state, n in value.items():
                    totals["deliveries"][state] = totals["deliveries"].get(state, 0) + n
            elif key == "errors":
                totals["errors"] += value
            elif isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    return totals


@main.command()
@click.option("--case", help="Only this case.")
@click.option("--recipient", help="Only this recipient (slug).")
@json_option
@click.pass_obj
@handle_errors
def status(obj: Context, case: str | None, recipient: str | None, as_json: bool) -> None:
    """Messages by review state, bundles, deliveries by channel and state.

    \b
    Example:
      solidarity status --case viktor-arkhipov --json
    """
    data = obj.store.status(case=case, recipient=recipient)
    if as_json:
        echo_json(data)
    else:
        show_status(data, outbox=obj.settings.outbox_label)


def _hold_command(held: bool) -> Callable[..., None]:
    verb = "hold" if held else "release"

    @click.option("--case", required=True, help="The case.")
    @click.option("--recipient", help="Only this recipient of the case.")
    @click.option("--reason", default="", help="Why: kept in the ledger.")
    @json_option
    @click.pass_obj
    @handle_errors
    def command(obj: Context, case: str, recipient: str | None, reason: str, as_json: bool) -> None:
        result = obj.store.set_held(case, recipient, held, actor=obj.settings.actor, reason=reason)
        if as_json:
            echo_json(result)
        else:
            target = f"{case}/{recipient}" if recipient else f"case {case}"
            click.echo(
                f"{target}: {verb} ({result['deliveries']} pending deliveries {verb}ed)".replace(
                    "holded", "held"
                )
            )

    return command


main.command(
    "hold",
    help="Stop pending deliveries of a case or recipient at once.\n\n\b\nExample:\n"
    "  solidarity hold --case viktor-arkhipov --recipient arkhipov-detention-centre"
    " --reason released",
)(_hold_command(True))
main.command(
    "release",
    help="Resume held deliveries of a case or recipient.\n\n\b\nExample:\n"
    "  solidarity release --case viktor-arkhipov",
)(_hold_command(False))


# -- audit --------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Check the ledger, trace what happened to a message, and hand audits out.

    \b
    Example:
      solidarity audit verify
      solidarity audit trace pl-0002
      solidarity audit export --case viktor-arkhipov --output audit-viktor
      solidarity audit verify-package audit-viktor --key example.org_solidarity-2027.pub
    """


@audit.command("verify")
@json_option
@click.pass_obj
@handle_errors
def audit_verify(obj: Context, as_json: bool) -> None:
    """Recompute the ledger chain and re-hash every artefact; exit 1 on any mismatch.

    \b
    Example:
      solidarity audit verify
    """
    outbox = open_outbox(obj.settings)
    problems = [str(p) for p in ledger.verify(obj.store.events(), outbox.sha256, outbox.where)]
    problems += list(obj.store.table_mismatches())
    result = {"ok": not problems, "events": obj.store.ledger_size(), "problems": problems}
    if as_json:
        echo_json(result)
    else:
        show_verify(result)
    if problems:
        sys.exit(1)


@audit.command("trace")
@click.argument("message_ref", metavar="ID")
@click.option(
    "--package",
    "package_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Answer from this audit package, offline, instead of the database.",
)
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --package: the organisation's public key (.pub) to check the signature with.",
)
@json_option
@click.pass_obj
@handle_errors
def audit_trace(
    obj: Context,
    message_ref: str,
    package_dir: Path | None,
    key_files: tuple[Path, ...],
    as_json: bool,
) -> None:
    """One message's path: review, bundle (hash, pages), deliveries, every event with proof.

    With --package, the answer comes from an audit package instead (no database needed),
    after the package verifies: ID is then a message id (12 or message:12), a bundle id
    (bnd-…) or a delivery id (dlv-…), and each event is marked as included in the signed
    checkpoint. Without --key the checkpoint's signature is not checked.

    \b
    Example:
      solidarity audit trace pl-0002
      solidarity audit trace 12 --package audit-viktor --key example.org_solidarity-2027.pub
    """
    if package_dir is not None:
        _trace_package(package_dir, message_ref, key_files, as_json)
        return
    if key_files:
        raise InputError("--key goes with --package: the database trace needs no key")
    (message_id,) = obj.store.resolve([message_ref])
    data = obj.store.trace(message_id)
    outbox = open_outbox(obj.settings)
    for bundle in data["bundles"]:
        bundle["page"] = _page_in_bundle(outbox, bundle.get("manifest_path", ""), message_id)
    if as_json:
        echo_json(data)
    else:
        show_trace(data)


@audit.command("keygen")
@click.option("--name", required=True, help="The key's name, e.g. example.org/solidarity-2027.")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("keys"),
    show_default=True,
    help="Where to write NAME.key (private, mode 0600) and NAME.pub.",
)
@json_option
@handle_errors
def audit_keygen(name: str, folder: Path, as_json: bool) -> None:
    """Make the organisation's Ed25519 signing key for checkpoints.

    The private key goes to a file readable by its owner only; keep it off the database
    machine's backups and away from operators who do not sign. The public key (.pub) is
    what auditors get. To rotate, make a key under a new name and sign with it from then
    on: checkpoints signed with the old key still verify with the old .pub.

    \b
    Example:
      solidarity audit keygen --name example.org/solidarity-2027 --dir /etc/solidarity/keys
    """
    from delivery.checkpoint import CheckpointError, read_key_file, write_key_files

    try:
        key_path, pub_path = write_key_files(name, folder)
    except FileExistsError as exc:
        raise InputError(f"{exc.filename}: a key file is already there; pick a new name") from exc
    except CheckpointError as exc:
        raise InputError(str(exc)) from exc
    public = read_key_file(pub_path)
    if as_json:
        echo_json({"private": str(key_path), "public": str(pub_path), "verifier_key": public})
        return
    click.echo(f"private key: {key_path} (keep it secret)")
    click.echo(f"public key:  {pub_path}\n  {public}")


@audit.command("checkpoint")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The private key file made by `solidarity audit keygen`.",
)
@click.option(
    "--origin", help="The log's name (default: <bounce domain>/solidarity-delivery/ledger)."
)
@json_option
@click.pass_obj
@handle_errors
def audit_checkpoint(obj: Context, key_file: Path, origin: str | None, as_json: bool) -> None:
    """Sign the ledger's Merkle tree head and write it where it can be published.

    The ledger is a Merkle tree (RFC 9162) whose leaves are the events' hashes; the
    checkpoint (C2SP tlog-checkpoint, Ed25519 signed note) names its size and root. Send
    it to auditors or publish it: a later checkpoint provably extends it, so the ledger
    cannot be rewritten behind it.

    \b
    Example:
      solidarity audit checkpoint --key /etc/solidarity/keys/example.org_solidarity-2027.key
    """
    from delivery.audit import origin_for, write_checkpoint
    from delivery.checkpoint import CheckpointError

    name = origin or origin_for(obj.store.campaign().organisation.bounce_domain)
    try:
        signed = write_checkpoint(
            obj.store,
            open_outbox(obj.settings),
            key_file,
            origin=name,
            actor=obj.settings.actor,
        )
    except CheckpointError as exc:
        raise InputError(str(exc)) from exc
    if as_json:
        echo_json(signed.as_dict())
        return
    click.echo(f"{obj.settings.outbox_label}/{signed.artefact.path}:")
    click.echo(signed.note, nl=False)


@audit.command("export")
@click.option("--case", required=True, metavar="SLUG", help="The case the package is about.")
@click.option(
    "--since",
    metavar="YYYY-MM-DD",
    help="Start at the first event of this UTC day (default: the ledger's first event).",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Sign a fresh checkpoint with this private key first (default: the newest"
    " checkpoint in the outbox).",
)
@click.option(
    "--with-pdfs",
    is_flag=True,
    help="Also copy each bundle's PDF. THE PDFs HOLD SUPPORTERS' NAMES AND WORDS: hand such a"
    " package only to people entitled to see them.",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The folder to write the package into; it must not exist or be empty.",
)
@json_option
@click.pass_obj
@handle_errors
def audit_export(
    obj: Context,
    case: str,
    since: str | None,
    key_file: Path | None,
    with_pdfs: bool,
    output: Path,
    as_json: bool,
) -> None:
    """Write a self-contained audit package of a case, to verify offline.

    The package holds every ledger event from the start (or --since) up to a signed
    checkpoint, not only the case's, so an auditor can see that none was left out; the
    checkpoint; inclusion proofs of the case's events; earlier checkpoints with their
    consistency proofs; and the case's bundle manifests (ids and hashes only). Event
    payloads hold ids and hashes, no supporter's personal data. README.txt in the package
    says how to check it with `solidarity audit verify-package`.

    \b
    Example:
      solidarity audit export --case viktor-arkhipov --output audit-viktor
      solidarity audit export --case viktor-arkhipov --since 2026-12-01 \\
        --key /etc/solidarity/keys/example.org_solidarity-2027.key --output audit-december
    """
    from datetime import date

    from delivery.audit import origin_for
    from delivery.package import export_package

    try:
        day = date.fromisoformat(since) if since else None
    except ValueError:
        raise InputError(f"--since {since!r}: not a day (YYYY-MM-DD)") from None
    origin = origin_for(obj.store.campaign().organisation.bounce_domain)
    exported = export_package(
        obj.store,
        open_outbox(obj.settings),
        output,
        case=case,
        since=day,
        with_pdfs=with_pdfs,
        key_file=key_file,
        origin=origin,
        actor=obj.settings.actor,
        progress=progress,
    )
    if as_json:
        echo_json(exported.as_dict())
        return
    click.echo(
        f"{exported.path}: case {exported.case}, events {exported.start} to {exported.size}"
        f" ({exported.events} events, {exported.proofs} inclusion proofs),"
        f" {len(exported.files)} files, {len(exported.erased)} erased,"
        f" {exported.earlier_checkpoints} earlier checkpoints"
    )
    if with_pdfs:
        click.echo("  the package holds the bundles' PDFs: supporters' names and words")
    click.echo(f"  verify: solidarity audit verify-package {exported.path} --key ORGANISATION.pub")


@audit.command("verify-package")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--key",
    "key_files",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The organisation's public key (.pub); repeat for keys used before a rotation.",
)
@click.option(
    "--checkpoint",
    "earlier_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A checkpoint seen earlier: the package must prove that it extends it. Repeatable.",
)
@json_option
@handle_errors
def audit_verify_package(
    folder: Path, key_files: tuple[Path, ...], earlier_files: tuple[Path, ...], as_json: bool
) -> None:
    """Check an audit package offline: signature, chain, Merkle root, proofs and files.

    Needs only the package and the public key: no database, outbox or settings. Exit 0
    when every check holds, 1 with each problem named (event number, kind and subject,
    or file), 2 when the folder cannot be read as a package.

    \b
    Example:
      solidarity audit verify-package audit-viktor --key example.org_solidarity-2027.pub
      solidarity audit verify-package audit-viktor --key new.pub --key old.pub \\
        --checkpoint checkpoint-00000031-f56c2b1327e32552.txt
    """
    from delivery.package import GivenCheckpoint, verify_package

    given = [GivenCheckpoint(label=str(path), note=_read_text(path)) for path in earlier_files]
    result = verify_package(folder, _verifier_keys(key_files), given=given)
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo("\n".join(result.lines()))
    if not result.ok:
        sys.exit(1)


def _trace_package(folder: Path, ref: str, key_files: tuple[Path, ...], as_json: bool) -> None:
    """`audit trace --package`: verify the package, then answer from it."""
    from delivery.errors import LedgerError
    from delivery.package import trace_package, verify_package

    keys = _verifier_keys(key_files)
    if not keys:
        progress("note: without --key the checkpoint's signature is not checked; all else is")
    result = verify_package(folder, keys, check_signature=bool(keys))
    if not result.ok:
        click.echo("\n".join(result.lines()))
        raise LedgerError(f"{folder}: the package does not verify; nothing traced")
    traced = trace_package(folder, ref, result)
    if as_json:
        echo_json(traced.as_dict())
    else:
        click.echo("\n".join(traced.lines()))


def _verifier_keys(paths: tuple[Path, ...]) -> list[str]:
    """The public keys in `paths`; a private key or an unreadable file is bad input."""
    from delivery.checkpoint import CheckpointError, read_key_file

    keys: list[str] = []
    for path in paths:
        try:
            key = read_key_file(path)
        except CheckpointError as exc:
            raise InputError(str(exc)) from exc
        if key.startswith("PRIVATE+KEY+"):
            raise InputError(f"{path}: a private key; give the public key (.pub) instead")
        keys.append(key)
    return keys


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read: {exc}") from exc


def _page_in_bundle(outbox: Outbox, manifest_path: str, message_id: int) -> int | None:
    """The page of the bundle the message is printed on, from the bundle's manifest."""
    if not manifest_path or not outbox.exists(manifest_path):
        return None
    manifest = json.loads(outbox.read(manifest_path))
    for entry in manifest.get("messages", ()):
        if entry.get("id") == message_id:
            page = entry.get("page")
            return int(page) if page is not None else None
    return None


# -- report -------------------------------------------------------------------------------


@main.command("report")
@click.option("--case", metavar="SLUG", help="Only this case (default: every case).")
@click.option("--since", metavar="YYYY-MM-DD", help="From this UTC day on.")
@click.option("--until", metavar="YYYY-MM-DD", help="Up to this UTC day, included.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pdf", "html", "csv", "json"]),
    default="html",
    show_default=True,
    help="pdf and html: the report with its charts; csv: the deliveries; json: all of it.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The file to write (default: outbox/reports/report-<case or all>-<UTC stamp>.<format>;"
    " with the outbox in S3, reports/ in the working folder).",
)
@json_option
@click.pass_obj
@handle_errors
def report_command(
    obj: Context,
    case: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    output: Path | None,
    as_json: bool,
) -> None:
    """What an auditor or a campaign lead reads at a glance, written to a file.

    Messages received, approved, rejected, held and pending, by case; supporters'
    countries; bundles per recipient; every delivery with its state, proof, provider
    reference, last error and the decision recorded about it; what still waits and why;
    and the ledger head, to tie the report to `solidarity audit verify`. Messages count in
    the period they were imported; deliveries when they were alive in it.

    PDF and HTML show three charts: messages by supporters' country, deliveries by state
    per day, and proof per recipient. CSV is the deliveries table, one row per delivery,
    safe to open in a spreadsheet. JSON is the whole report. --json prints what was written.

    \b
    Example:
      solidarity report --format pdf
      solidarity report --case viktor-arkhipov --since 2026-12-01 --until 2026-12-31 --format csv
    """
    from datetime import UTC, date, datetime

    from delivery.reporting import Scope, build_report, write_report
    from delivery.reporting.render import default_path

    def day(option: str, text: str | None) -> date | None:
        try:
            return date.fromisoformat(text) if text else None
        except ValueError:
            raise InputError(f"{option} {text!r}: not a day (YYYY-MM-DD)") from None

    scope = Scope(case=case, since=day("--since", since), until=day("--until", until))
    if scope.since and scope.until and scope.since > scope.until:
        raise InputError(f"--since {scope.since} is after --until {scope.until}")
    now = datetime.now(UTC)
    data = build_report(obj.store, scope, now=now)
    local = Path() if obj.settings.outbox_location else obj.settings.outbox_path
    path = output or default_path(local, scope, fmt, now)
    written = write_report(data, fmt, path, templates=obj.settings.templates)
    totals = data.totals
    summary = {
        **written.as_dict(),
        "messages": totals.counts(),
        "deliveries": len(data.deliveries),
        "waiting": len(data.waiting),
        "ledger": {"events": data.ledger.events, "head": data.ledger.last_hash},
    }
    if as_json:
        echo_json(summary)
        return
    pages = f", {written.pages} pages" if written.pages else ""
    click.echo(f"wrote {path} ({fmt}{pages})")
    click.echo(
        f"  messages {totals.received} (approved {totals.approved}, rejected {totals.rejected},"
        f" held {totals.held}, pending {totals.pending});"
        f" deliveries {len(data.deliveries)}, still waiting {len(data.waiting)}"
    )
    click.echo(f"  ledger: {data.ledger.events} events, head {data.ledger.last_hash or '-'}")


# -- retention ----------------------------------------------------------------------------


@main.command()
@click.option("--dry-run", is_flag=True, help="Only show what would be erased; change nothing.")
@click.option(
    "--days",
    type=click.IntRange(0),
    help="Erase what ended more than this many days ago (default: SOLIDARITY_RETENTION__DAYS).",
)
@json_option
@click.pass_obj
@handle_errors
def purge(obj: Context, dry_run: bool, days: int | None, as_json: bool) -> None:
    """Erase supporters' data once the deliveries carrying it are over.

    A bundle's deliveries are over when each was delivered, accepted, spooled or
    cancelled, or failed, bounced or came back and a decision was recorded about it. Once
    the last of them is older than the retention period, the bundle's PDF and the e-mails,
    faxes and envelopes made from it are deleted, and its messages lose their text, the
    supporter's name, e-mail and city, and the key that linked them to the ledger.
    Rejected messages and import reject files go the same time after they were decided
    or written. Ids, countries, states and hashes stay: counts still add up, and
    `solidarity audit verify` still passes, knowing each erased file from a lost one.
    The worker does this once a day by itself.

    \b
    Example:
      solidarity purge --dry-run
      solidarity purge --days 30 --json
    """
    from datetime import UTC, datetime

    from delivery.retention import purge as run_purge

    settings = obj.settings
    report = run_purge(
        obj.store,
        open_outbox(settings),
        days=settings.retention.days if days is None else days,
        now=datetime.now(UTC),
        actor=settings.actor,
        dry_run=dry_run,
        progress=progress,
    )
    if as_json:
        echo_json(report.as_dict())
        return
    verb = "would erase" if dry_run else "erased"
    click.echo(
        f"{verb}: {report.messages} messages' personal data, {report.files} files"
        f" ({report.bytes / 1e6:.1f} MB) of {report.bundles} bundles"
        + (f" and {report.reject_files} import reject files" if report.reject_files else "")
        + f"; everything that ended before {report.before:%Y-%m-%d %H:%M} UTC"
        f" ({report.days} days)"
    )
    for case, counts in sorted(report.by_case.items()):
        bundles, files = counts["bundles"], counts["files"]
        click.echo(
            f"  {case}: {bundles} bundle{'s' * (bundles != 1)}, {files} file{'s' * (files != 1)}"
        )
    if report.leftovers:
        click.echo(f"  and {report.leftovers} files an interrupted run had left behind")


# -- demo ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--messages",
    "count",
    type=click.IntRange(1),
    default=3000,
    show_default=True,
    help="How many messages to generate.",
)
@json_option
@click.pass_obj
@handle_errors
def demo(obj: Context, count: int, as_json: bool) -> None:
    """Write a sample campaign and generated messages, then run the whole pipeline.

    Everything stays on this machine: e-mail as .eml files, faxes as fax-ready PDFs with job
    files, post as print jobs with a mailroom manifest, all in the outbox.

    \b
    Example:
      solidarity demo --messages 5000
    """
    from delivery.demo_run import run_demo

    result = run_demo(obj.settings, obj.store, count=count, progress=progress)
    if as_json:
        echo_json(result)
    else:
        show_status(result["status"], outbox=obj.settings.outbox_label, files=result["files"])
        waiting = result["status"]["messages"]["pending"]
        click.echo(
            "\nnext:\n"
            f"  solidarity review list --flagged    the {waiting} messages a rule flagged\n"
            "  solidarity audit verify             check the ledger and every file's hash\n"
            "  solidarity audit trace demo-000001  follow one message from import to delivery"
        )
