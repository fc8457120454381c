"""One APScheduler (3.x) inside the process: schedules from config, one run of a job at a time, a history."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from appliance.errors import InvalidInput, NotEnoughData, NotFound
from appliance.threads import Threads
from appliance.types import now_utc
from storage.job_runs import JobRun, JobRunStore

log = logging.getLogger("appliance.jobs")
_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_schedule(spec: str, field: str) -> BaseTrigger | None:
    """"every 10m" (s/m/h/d), "cron <minute> <hour> <day> <month> <weekday>" (UTC), or "off"."""
    spec = spec.strip().lower()
    if spec == "off":
        return None
    if match := _EVERY.match(spec):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds <= 0:
            raise InvalidInput(f"{field}: the interval must be positive", field=field)
        return IntervalTrigger(seconds=seconds, timezone=UTC)
    if spec.startswith("cron "):
        try:
            return CronTrigger.from_crontab(spec[5:], timezone=UTC)
        except ValueError as exc:
            raise InvalidInput(f"{field}: {exc}", field=field) from None
    raise InvalidInput(f"{field}: use 'every 10m', 'cron 30 3 * * *' or 'off', not {spec!r}", field=field)


@dataclass(frozen=True)
class JobSpec:
    name: str
    run: Callable[[], str | None]  # does the work; returns a one-line summary
    schedule: str


class Jobs:
    """The appliance's scheduled jobs. A job never runs twice at once (scheduled or triggered by hand); a
    failure is logged and recorded and the next run happens as scheduled; a cron run missed while the
    process was down runs once at start-up if it is within the misfire grace."""

    def __init__(self, specs: Mapping[str, JobSpec], runs: JobRunStore, misfire_grace_seconds: float,
                 clock: Callable[[], datetime] = now_utc,
                 on_run: Callable[[JobRun], None] = lambda run: None) -> None:
        self.specs = dict(specs)
        self.on_run = on_run  # told every finished run (metrics)
        self.triggers = {name: parse_schedule(s.schedule, f"jobs.{name}") for name, s in self.specs.items()}
        self.runs = runs
        self.grace = misfire_grace_seconds
        self.clock = clock
        self._locks = {name: threading.Lock() for name in self.specs}
        self._scheduler: BackgroundScheduler | None = None
        self._threads = Threads("jobs")  # triggered runs; once it is stopping, a run that begins (queued in the
        # scheduler's pool or triggered) does nothing

    def run(self, name: str) -> JobRun | None:
        """Run a job now in this thread and record it; None if that job is already running or the scheduler stopped."""
        spec = self._spec(name)
        lock = self._locks[name]
        if not lock.acquire(blocking=False):
            log.info("job %s is already running; this run is skipped", name)
            return None
        try:
            if self._threads.stopping.is_set():
                return None
            started, t0 = self.clock(), time.perf_counter()
            try:
                detail, outcome = spec.run(), "ok"
            except NotEnoughData as exc:  # nothing to do yet: recorded with the reason, not as a failure
                detail, outcome = str(exc), "skipped"
            except Exception as exc:  # a failing job must never take the server down
                log.exception("job %s failed", name)
                detail, outcome = f"{type(exc).__name__}: {exc}", "failed"
            run = JobRun(name, started, self.clock(), time.perf_counter() - t0, outcome, detail)
            self.runs.record(run)
            self.on_run(run)
            return run
        finally:
            lock.release()

    def trigger(self, name: str) -> bool:
        """Start a run in the background now; False if the job is already running (or the scheduler stopped)."""
        self._spec(name)
        if self._locks[name].locked():
            return False
        return self._threads.start(self.run, f"job-{name}", name)

    def running(self, name: str) -> bool:
        self._spec(name)
        return self._locks[name].locked()

    def start(self) -> None:
        scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(self.grace)},
        )
        for name, trigger in self.triggers.items():
            if trigger is None:
                continue
            first = datetime.now(UTC) if self._missed(name, trigger) else None
            kwargs = {"next_run_time": first} if first else {}
            scheduler.add_job(self.run, trigger, args=[name], id=name, name=name, **kwargs)
            if first:
                log.info("job %s missed a run while the appliance was down: it runs now", name)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self, timeout: float = 30.0) -> None:
        """Schedule and trigger nothing more; wait up to `timeout` s for the runs in progress (scheduled or
        triggered), naming in the log any still running."""
        deadline = time.monotonic() + timeout
        self._threads.stopping.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        self._threads.close(timeout)
        for name, lock in self._locks.items():  # every run holds its job's lock, whichever thread runs it
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                lock.release()
            else:
                log.warning("job %s still running %.0f s after the scheduler stopped", name, timeout)

    def next_run(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name) if self._scheduler else None
        return job.next_run_time if job else None

    def _missed(self, name: str, trigger: BaseTrigger) -> bool:
        """A cron job whose fire time after its last recorded run has passed, within the misfire grace."""
        if not isinstance(trigger, CronTrigger):
            return False
        last = self.runs.last(name)
        if last is None:
            return False
        due = trigger.get_next_fire_time(None, last.started_at.replace(tzinfo=UTC))
        now = datetime.now(UTC)
        return due is not None and due <= now and (now - due).total_seconds() <= self.grace

    def _spec(self, name: str) -> JobSpec:
        if name not in self.specs:
            raise NotFound(f"no job named {name!r}; jobs are {', '.join(sorted(self.specs))}")
        return self.specs[name]
