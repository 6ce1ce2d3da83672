"""Job claims in one Redis round trip each, all of a poll's claims at once.

arq claims a job with WATCH on its in-progress key, EXISTS, ZSCORE, then MULTI/PSETEX/EXEC: four round trips,
job after job, in the poll loop. On a busy worker each round trip also waits its turn on the event loop, so
starting one job took tens of milliseconds and jobs could not start as fast as they became due: with one
worker beside three big full syncs, live changes' jobs waited 1-7 s in the queue (p50 2.7 s) for a run of
10-40 ms (``bench/scaleout.py``, docs/benchmarks.md §9). Several workers repeat each claim against each other
(the WATCH that fails), so Redis traffic grew with every worker added.

Here the same check-and-mark is one script (atomic in Redis, so two workers never both start a job), and a
poll's claims are sent together. What a claim checks is arq's: the job is not in progress, still queued, and
due by this worker's clock; it marks the job in progress for arq's own in-progress timeout.

Bulk jobs (full syncs and re-derivations, activity notes, campaign totals, the export reconcile: job ids
``bulk:<account>:…``, ``app.queue.enqueue``) are capped twice, so that no account, however large, and no crowd
of accounts syncing at once takes the slots live changes need:

- per worker, ``max_bulk_jobs`` of its ``max_jobs`` slots at most (the rest stay free for live jobs);
- per account, ``account_bulk_jobs`` running at once across every worker and machine, counted by the claim
  script in a sorted set per account (member: job id, score: lease end on Redis's clock). A running job's
  lease is renewed while it runs, so the entries of a killed worker lapse within ``BULK_LEASE_MS``, not after
  arq's in-progress time.

A bulk job over either cap stays queued, due, and is claimed at a later poll once a slot frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from app.queue import BULK_PREFIX
from app.worker.stopping import outlast_cancels

# A running bulk job's entry in its account's set lapses this long after its last renewal (renewed every third
# of it, so two renewals may fail before an entry lapses).
BULK_LEASE_MS = 15_000
# How long a stopped claim round may take to hand its claims back to Redis.
HAND_BACK_SECONDS = 2.0
_MAX_READS = 8  # queue reads per poll at most (arq's first and up to seven more, each queue_read_limit ids)


def bulk_account(job_id: str) -> str | None:
    """The account of a bulk job's id (``bulk:<account>:…``), None for any other job."""
    if not job_id.startswith(BULK_PREFIX):
        return None
    account, sep, _ = job_id[len(BULK_PREFIX) :].partition(":")
    return account if sep and account else None


def bulk_running_key(account: str) -> str:
    return f"contactsync:bulk-running:{account}"


# KEYS: the job's in-progress key, the queue [, the account's running bulk jobs]. ARGV: job id, now (ms),
# in-progress lifetime (ms) [, the account's cap, the bulk lease (ms), this claim's member]. Returns the job's score when claimed,
# 0 when not ours (running elsewhere, no longer queued, or not due yet), -1 when its account is at its cap.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
if KEYS[3] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then
    return -1
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
return tonumber(score)
"""

# KEYS: the account's running bulk jobs. ARGV: bulk lease (ms), members. Moves the lease end of those still
# listed (XX: a place that lapsed is not brought back; it may already be someone else's).
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""


class ClaimingWorker(Worker):
    """arq's Worker with ``start_jobs`` claiming by script, the poll's claims in flight together, and bulk jobs
    capped per worker (``max_bulk_jobs``) and per account (``account_bulk_jobs``)."""

    _claim_script: Any = None  # registered on the first claim (the pool may be made at start-up)
    _renew_script: Any = None
    bulk_lease_ms = BULK_LEASE_MS

    def __init__(
        self, *args: Any, max_bulk_jobs: int | None = None, account_bulk_jobs: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_bulk_jobs = (
            self.max_jobs if max_bulk_jobs is None else max(1, min(max_bulk_jobs, self.max_jobs))
        )
        self.account_bulk_jobs = max(1, account_bulk_jobs)
        # The bulk jobs this worker runs: job id → (account, its member in the account's set). A member is
        # unique per claim, so releasing one run's place never removes the place of the same job's next run
        # (a retry another worker claimed before our release arrived).
        self.bulk_running: dict[str, tuple[str, str]] = {}
        self._members: dict[str, str] = {}  # claims in flight: job id → member
        self._renewer: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        ids = [job_id.decode() for job_id in job_ids]
        reads = 1
        while True:
            await self._start_some(ids)
            # arq reads the oldest due ids only (``queue_read_limit``), jobs running anywhere included. When
            # all of them were passed over or refused (running elsewhere, bulk jobs over a cap) while slots are
            # free, read on, so that jobs behind them are not hidden until the front clears.
            if (
                len(ids) < self.queue_read_limit
                or reads >= _MAX_READS
                or self.job_counter >= self.max_jobs
                or not self.allow_pick_jobs
            ):
                return
            more = await self.pool.zrangebyscore(
                self.queue_name,
                min=float("-inf"),
                max=timestamp_ms(),
                start=reads * self.queue_read_limit,
                num=self.queue_read_limit,
            )
            ids = [job_id.decode() for job_id in more]
            reads += 1

    async def _start_some(self, ids: list[str]) -> None:
        """Claim what can start of ``ids`` (oldest first): live jobs first, then bulk jobs within the caps."""
        live = [j for j in ids if j not in self.tasks and bulk_account(j) is None]
        bulk = [j for j in ids if j not in self.tasks and bulk_account(j) is not None]
        failure = await self._claim_in_rounds(live, bulk=False)
        if failure is None and bulk:
            failure = await self._claim_in_rounds(bulk, bulk=True)
        if failure is not None:
            raise failure  # the poll loop's own handling (a Redis that went away stops the worker)

    async def _claim_in_rounds(self, candidates: list[str], *, bulk: bool) -> BaseException | None:
        # Rounds of claims, each filling the free slots (for bulk jobs: this worker's free bulk places), until
        # they are full or the ids run out: a job that is not ours (running elsewhere: a killed worker's stays
        # "in progress" for a while) must not keep the jobs behind it waiting, as in arq, which goes on to the
        # next id. An account found at its cap is passed over for the rest of the poll.
        waiting = list(reversed(candidates))  # popped from the end: oldest first
        full: set[str | None] = set()
        failure: BaseException | None = None
        while waiting and failure is None and self.allow_pick_jobs:
            taken: list[str] = []
            while waiting and self.job_counter < self.max_jobs:
                if bulk and len(self.bulk_running) + len(taken) >= self.max_bulk_jobs:
                    break
                job_id = waiting.pop()
                if bulk and bulk_account(job_id) in full:
                    continue
                await self.sem.acquire()
                self.job_counter += 1
                taken.append(job_id)
            if not taken:
                break
            claims = await self._claim_round(taken)
            for job_id, claim in zip(taken, claims, strict=True):
                member = self._members.pop(job_id, None)
                if isinstance(claim, BaseException) or claim <= 0:
                    # Not ours, its account at its cap (or Redis failed): give the slot back, as arq does.
                    self.job_counter -= 1
                    self.sem.release()
                    if isinstance(claim, BaseException):
                        failure = failure or claim
                    elif claim < 0:
                        full.add(bulk_account(job_id))
                    continue
                self._start(job_id, claim, member)
        return failure

    def _start(self, job_id: str, score: int, member: str | None) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.run_job(job_id, score))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = task
        account = bulk_account(job_id)
        if account is None or member is None:
            return
        self.bulk_running[job_id] = (account, member)
        task.add_done_callback(lambda _: self._bulk_done(job_id))
        if self._renewer is None or self._renewer.done():
            self._renewer = loop.create_task(self._renew_leases())

    def _bulk_done(self, job_id: str) -> None:
        account, member = self.bulk_running.pop(job_id)
        release = asyncio.get_running_loop().create_task(self._release_place(account, member))
        self._releasing.add(release)
        release.add_done_callback(self._releasing.discard)

    async def _release_place(self, account: str, member: str) -> None:
        # Best effort: a place left behind (Redis away, the worker closing) lapses within the bulk lease.
        with contextlib.suppress(Exception):
            await self.pool.zrem(bulk_running_key(account), member)

    async def _renew_leases(self) -> None:
        """Keep the running bulk jobs' places; ends when this worker runs none (or closes)."""
        if self._renew_script is None:
            self._renew_script = self.pool.register_script(_RENEW)
        while self.bulk_running:
            await asyncio.sleep(self.bulk_lease_ms / 3000)
            per_account: dict[str, list[str]] = {}
            for account, member in list(self.bulk_running.values()):
                per_account.setdefault(account, []).append(member)
            for account, members in per_account.items():
                with contextlib.suppress(Exception):  # the next renewal tries again
                    await self._renew_script(
                        keys=[bulk_running_key(account)], args=[self.bulk_lease_ms, *members]
                    )

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self._renewer is not None:
                self._renewer.cancel()

    async def _hand_back(self, taken: list[str], claiming: asyncio.Future[list[int | BaseException]]) -> None:
        """Give back the claims of a round that was stopped: their in-progress marks and bulk places."""
        results = await claiming
        ours = [j for j, r in zip(taken, results, strict=True) if isinstance(r, int) and r > 0]
        if not ours:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.delete(*(in_progress_key_prefix + job_id for job_id in ours))
            for job_id in ours:
                account, member = bulk_account(job_id), self._members.get(job_id)
                if account is not None and member is not None:
                    pipe.zrem(bulk_running_key(account), member)
            await pipe.execute()

    async def _claim_round(self, taken: list[str]) -> list[int | BaseException]:
        now = timestamp_ms()
        claiming = asyncio.ensure_future(
            asyncio.gather(*(self._claim(job_id, now) for job_id in taken), return_exceptions=True)
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Stopped mid-round (shutdown, a deploy): the claims Redis already made would keep their jobs "in
            # progress" for arq's whole in-progress time (job timeout + 10 s) with nobody running them, and
            # their accounts' places taken. Hand them back (through the stop's repeated cancels), then stop as
            # asked.
            await outlast_cancels(asyncio.ensure_future(self._hand_back(taken, claiming)), HAND_BACK_SECONDS)
            for job_id in taken:
                self._members.pop(job_id, None)
                self.job_counter -= 1
                self.sem.release()
            raise

    async def _claim(self, job_id: str, now: int) -> int:
        script = self._claim_script
        if script is None:
            script = self._claim_script = self.pool.register_script(_CLAIM)
        keys = [in_progress_key_prefix + job_id, self.queue_name]
        args: list[Any] = [job_id, now, int(self.in_progress_timeout_s * 1000)]
        account = bulk_account(job_id)
        if account is not None:
            member = self._members[job_id] = f"{job_id}#{uuid.uuid4().hex[:12]}"
            keys.append(bulk_running_key(account))
            args += [self.account_bulk_jobs, self.bulk_lease_ms, member]
        return int(await script(keys=keys, args=args))
