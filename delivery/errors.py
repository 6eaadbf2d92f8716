"""One error tree. Transient errors are retried; permanent ones are not.

Every message names the file, line, field, case or recipient it is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from delivery.models import Part


class DeliveryError(Exception):
    """Base of every error this package raises on purpose."""


class PermanentError(DeliveryError):
    """Retrying will not help."""


class TransientError(DeliveryError):
    """The same call may succeed later."""


class InputError(PermanentError, ValueError):
    """Bad input from an operator: a file, a row, an argument (exit code 2)."""


class CampaignError(InputError):
    """A campaign file that cannot be loaded."""


class InvalidTransitionError(PermanentError, ValueError):
    """A delivery state change the state machine does not allow."""


class NotFoundError(InputError, LookupError):
    """An id, case or recipient that does not exist."""


class RenderError(PermanentError):
    """A bundle or digest could not be rendered."""


class ChannelError(DeliveryError):
    """A channel could not hand over a delivery.

    ``parts`` are the pieces of the parcel the provider had already accepted when this
    went wrong (e-mail 1 of 3, fax part 1 of 2): they are recorded and never sent again.
    """

    def __init__(self, message: str, *, parts: Sequence[Part] = ()) -> None:
        super().__init__(message)
        self.parts: tuple[Part, ...] = tuple(parts)


class TransientChannelError(ChannelError, TransientError):
    """The channel may accept it later (4xx, timeout, busy)."""


class PermanentChannelError(ChannelError, PermanentError):
    """The channel refused it for good (5xx, invalid number)."""


class AmbiguousDeliveryError(ChannelError):
    """The provider may have accepted it (a connection lost after the end of DATA).

    Neither transient nor permanent: the delivery's state is unknown, and it is settled by
    reconciliation or a person, never by a blind resend.
    """


class ChannelSetupError(PermanentChannelError):
    """The channel cannot work as configured (TLS, certificate, credentials, host).

    About the settings, not the parcel: every parcel would fail the same way, so the run
    stops and the deliveries wait for an operator.
    """


class LedgerError(PermanentError):
    """The ledger chain or an artefact does not match what was recorded."""


class ConfigurationError(InputError):
    """Settings that are invalid or cannot work together (exit code 2)."""
