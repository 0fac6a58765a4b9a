"""What a ChatKit request must pass before it runs, held until its answer ends, released once.

A streamed turn takes, in order: the checks that must answer with a status code (preflight),
the thread (one answer per thread at a time, decided in the database), one of the user's stream
slots, a slot of this process (the stream gate), and a count against the per-minute quota. Each
is noted on one small `Holdings` object, so a refusal half-way gives back what was taken, and the
stream that outlives the route takes it over and closes it when it ends. (One object with a few
fields rather than an exit stack of callbacks: a thousand waiting streams each keep theirs.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from chatkit.types import (
    ChatKitReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    is_streaming_req,
)

from app.chat.composer import ComposerPolicy, composer_policy
from app.chat.inflight import ModelSlot, StreamGate
from app.chat.preflight import preflight
from app.context import RecentItems, RequestContext, TurnEnd
from app.errors import (
    AuthenticationError,
    RateLimitedError,
    ServerBusyError,
    ThreadBusyError,
)
from app.settings import Settings
from app.store.chatkit_store import SqlStore, new_thread_id
from app.store.usage import LimitExceeded, ThreadBusy, TurnClaims, UsageStore

logger = logging.getLogger(__name__)

# Ops that run the model: they count against the per-user limits and hold their thread.
TurnRequest = (
    ThreadsCreateReq
    | ThreadsAddUserMessageReq
    | ThreadsRetryAfterItemReq
    | ThreadsAddClientToolOutputReq
    | ThreadsAddStructuredInputReq
)
BUSY_RETRY_AFTER_SECONDS = 5
_Release = Callable[..., Awaitable[None]]
RELEASE_RETRY_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The limits admission applies (from Settings)."""

    max_message_chars: int
    turns_per_minute: int
    concurrent_streams: int
    lease_seconds: int
    queue_seconds: float
    attachments_enabled: bool = True
    composer: ComposerPolicy | None = None


def admission_policy(settings: Settings) -> AdmissionPolicy:
    return AdmissionPolicy(
        max_message_chars=settings.max_message_chars,
        turns_per_minute=settings.rate_limit_turns_per_minute,
        concurrent_streams=settings.rate_limit_concurrent_streams,
        lease_seconds=settings.stream_lease_seconds,
        queue_seconds=settings.turn_queue_seconds,
        attachments_enabled=settings.attachments,
        composer=composer_policy(settings),
    )


class Holdings:
    """What one admitted request took; `aclose()` gives it back (once), newest first."""

    __slots__ = ("_admission", "_closed", "claims", "slot", "stream_open", "turn_end")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.claims: TurnClaims | None = None
        self.turn_end: TurnEnd | None = None
        self.slot: ModelSlot | None = None
        self.stream_open = False
        self._closed = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._admission._give_back(self)


class Ticket:
    """What one admitted request holds; `hand_over()` moves it to the stream that ends it."""

    __slots__ = ("_holdings", "context", "handed_over")

    def __init__(self, context: RequestContext, holdings: Holdings) -> None:
        self.context = context
        self._holdings = holdings
        self.handed_over = False

    def hand_over(self) -> Holdings:
        """The holdings, now owned by the caller (close them once, when the stream ends)."""
        self.handed_over = True
        return self._holdings


class Admission:
    """Admits ChatKit requests: `async with admission.admit(request, caller) as ticket:`."""

    def __init__(
        self, *, store: SqlStore, usage: UsageStore, gate: StreamGate, policy: AdmissionPolicy
    ) -> None:
        self._store = store
        self._usage = usage
        self._gate = gate
        self._policy = policy
        # Releases that failed and are retried in the background (kept so they are not lost).
        self._retrying: set[asyncio.Task[None]] = set()
        # The claims of the turns running now, all renewed together by one task.
        self._live: set[TurnClaims] = set()
        self._renewer: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def admit(self, request: ChatKitReq, caller: RequestContext) -> AsyncIterator[Ticket]:
        """Check and reserve everything `request` needs; given back on exit unless handed over."""
        holdings = Holdings(self)
        ticket: Ticket | None = None
        try:
            context = caller
            await preflight(
                request,
                self._store,
                caller,
                max_message_chars=self._policy.max_message_chars,
                attachments_enabled=self._policy.attachments_enabled,
                composer=self._policy.composer,
            )
            if isinstance(request, TurnRequest):
                if self._gate.queue_full:
                    # So many turns wait already that this one would not get through in time.
                    raise ServerBusyError(
                        "The server is busy; please retry shortly.",
                        retry_after=BUSY_RETRY_AFTER_SECONDS,
                    )
                context = await self._take_turn(request, caller, holdings)
                # Waited for inside the stream, once the thread and the message are out.
                holdings.slot = self._gate.model_slot(self._policy.queue_seconds)
                context = dataclasses.replace(context, model_slot=holdings.slot)
            if is_streaming_req(request):
                self._gate.open()
                holdings.stream_open = True
            ticket = Ticket(context, holdings)
            yield ticket
        finally:
            if ticket is None or not ticket.handed_over:
                await holdings.aclose()

    async def _give_back(self, held: Holdings) -> None:
        """In the reverse order of taking; the claims are given back even if a step fails."""
        try:
            if held.stream_open:
                self._gate.close()
            if held.slot is not None:
                held.slot.release()
            if held.turn_end is not None:
                # Closed first: nothing of the turn runs once its claims are gone.
                await _shielded(held.turn_end.close)
        finally:
            if held.claims is not None:
                self._live.discard(held.claims)
                await self._release(self._usage.release_turn, held.claims)

    async def _take_turn(
        self, request: TurnRequest, caller: RequestContext, holdings: Holdings
    ) -> RequestContext:
        policy = self._policy
        if caller.expires_at is not None and caller.expires_at <= time.time():
            # The door's leeway is for clock skew; a turn forwards the token, which would fail.
            raise AuthenticationError("Your session has expired; sign in again.", reason="expired")
        if isinstance(request, ThreadsCreateReq):
            # Claim the thread before it exists, so it is busy from its first event on.
            thread_id = new_thread_id()
            caller = dataclasses.replace(caller, new_thread_id=thread_id)
        else:
            thread_id = request.params.thread_id
        try:
            # One statement: the thread, a stream slot, this minute's count (limits of 0 are off).
            claims = await self._usage.admit_turn(
                thread_id=thread_id,
                user_id=caller.user_id,
                lease_seconds=policy.lease_seconds,
                stream_limit=policy.concurrent_streams,
                turns_limit=policy.turns_per_minute,
            )
        except ThreadBusy:
            raise ThreadBusyError(
                "This thread is still answering; wait for the answer or stop it first."
            ) from None
        except LimitExceeded as exc:
            logger.info("limit.exceeded", extra={"reason": str(exc)})
            raise RateLimitedError(str(exc), retry_after=exc.retry_after) from None
        holdings.claims = claims
        self._live.add(claims)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew())
        holdings.turn_end = TurnEnd()
        # The turn reads its history, then the SDK reads the newest items again: once is enough.
        return dataclasses.replace(caller, turn_end=holdings.turn_end, recent_items=RecentItems())

    async def _renew(self) -> None:
        """Keep running answers' claims alive, all in one statement every third of the lease;
        a crashed process stops renewing and its claims lapse. Ends when no answer runs."""
        every = self._policy.lease_seconds / 3
        while self._live:
            await asyncio.sleep(every)
            live = list(self._live)
            if not live:
                break
            try:
                await self._usage.renew_turns(live, lease_seconds=self._policy.lease_seconds)
            except Exception as exc:
                logger.warning("limit.renew_failed", extra={"error": type(exc).__name__})

    async def _release(self, release: _Release, *args: TurnClaims) -> None:
        """Give a claim back now, or keep trying in the background until its lease lapses."""
        with anyio.CancelScope(shield=True):
            try:
                await release(*args)
                return
            except Exception as exc:
                logger.warning("limit.release_failed", extra={"error": type(exc).__name__})
        task = asyncio.create_task(self._release_later(release, *args))
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def _release_later(self, release: _Release, *args: TurnClaims) -> None:
        deadline = time.monotonic() + self._policy.lease_seconds
        delay = 0.5
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await release(*args)
                logger.info("limit.released_late")
                return
            except Exception:
                delay = min(delay * 2, RELEASE_RETRY_MAX_SECONDS)
        # Past its lease the claim has lapsed on its own.

    async def aclose(self) -> None:
        """At shutdown: let pending releases finish briefly, then drop them (their leases lapse)."""
        if self._retrying:
            await asyncio.wait(set(self._retrying), timeout=2)
        for task in self._retrying:
            task.cancel()
        if self._renewer is not None:
            await _cancel(self._renewer)


async def _shielded(close: Callable[[], Awaitable[None]]) -> None:
    with anyio.CancelScope(shield=True):
        await close()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.gather(task, return_exceptions=True)
