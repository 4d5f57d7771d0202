"""Run wrk against a server, metered; the servers under test as wrk sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import lua
from bench.procs import Group, Load, Meter, idle_rates, settle
from bench.stats import Figure
from bench.wrk import Wrk, WrkResult

if TYPE_CHECKING:
    from pathlib import Path


def latency(ms: Figure) -> str:
    """Milliseconds, or seconds from one second up."""
    if ms.median >= 1000:
        return Figure.of(v / 1000 for v in ms.values).show("s")
    return ms.show("ms")


@dataclass
class Runs:
    """The wrk results of one measurement over the runs, and the load meanwhile."""

    results: list[WrkResult] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)

    def add(self, result: WrkResult, load: Load) -> None:
        self.results.append(result)
        self.loads.append(load)

    @property
    def rps(self) -> Figure:
        return Figure.of(r.rps for r in self.results)

    def show(self) -> str:
        """`rps /s; p50 …, p99 …`, flagged when a run had errors."""
        p50 = latency(Figure.of(r.p50_ms for r in self.results))
        p99 = latency(Figure.of(r.p99_ms for r in self.results))
        text = f"{self.rps.show('/s')}; p50 {p50}, p99 {p99}"
        errors = sum(r.errors for r in self.results)
        if errors:
            text += (
                f"; ⚠ {errors} errors (non-2xx or socket) in {len(self.results)} runs"
            )
        return text

    def verdict(self, hint: str = "", database: str = "authledger") -> str:
        """What bounds these runs, and database transactions per request."""
        requests = sum(r.requests for r in self.results)
        transactions = sum(load.transactions.get(database, 0) for load in self.loads)
        if requests and transactions:
            per = f"{transactions / requests:.1f} txn/request in db {database}"
            hint = f"{hint}; {per}" if hint else per
        return Load.mean(self.loads).verdict(hint)

    def cores(self, group: str) -> float:
        return Load.mean(self.loads).cores.get(group, 0.0)


@dataclass(frozen=True)
class Target:
    """A server under test: its routes and the accounts and tokens made for it."""

    name: str
    base_url: str
    login_path: str
    login_body: str  # lua.LOGIN_JSON or lua.LOGIN_FORM
    signup_path: str
    me_path: str
    emails: Path  # accounts that log in, one per line
    me_tokens: Path  # access tokens, one per line
    password: str

    def login(self, threads: int) -> str:
        return lua.script(
            self.login_body,
            threads,
            emails=self.emails,
            password=self.password,
            path=self.login_path,
        )

    def signup(self, threads: int, prefix: str) -> str:
        return lua.script(
            lua.SIGNUP,
            threads,
            prefix=prefix,
            password=self.password,
            path=self.signup_path,
        )

    def me(self, threads: int) -> str:
        return lua.script(lua.BEARER, threads, tokens=self.me_tokens)


class Driver:
    """Run wrk against a target while metering every process group."""

    def __init__(
        self, groups: dict[str, Group], database_url: str, duration: float
    ) -> None:
        self.groups = groups
        self.database_url = database_url
        self.duration = duration
        self.idle: dict[str, float] = {}

    def measure_idle(self, database: str = "authledger") -> float:
        """Measure each database's idle rate (~26 s); return `database`'s, txn/s."""
        self.idle = idle_rates(self.groups, self.database_url)
        return self.idle.get(database, 0.0)

    def meter(self, *, count_transactions: bool = False) -> Meter:
        """A meter; counting transactions (less the idle rates) costs 21 s."""
        return Meter(
            self.groups,
            self.database_url,
            self.idle,
            count_transactions=count_transactions,
        )

    def run(
        self,
        url: str,
        script: str,
        threads: int,
        connections: int,
        *,
        count_transactions: bool = False,
    ) -> tuple[WrkResult, Load]:
        settle()
        with self.meter(count_transactions=count_transactions) as meter:
            wrk = Wrk(
                url,
                script,
                threads=threads,
                connections=connections,
                duration=self.duration,
            )
            try:
                result = wrk.result()
            finally:
                wrk.kill()
        return result, meter.load

    def storm(self, target: Target) -> tuple[WrkResult, WrkResult, Load]:
        """/me on 8 connections while 8 others log in: (me, logins, load)."""
        settle()
        with self.meter() as meter:
            logins = Wrk(
                target.base_url,
                target.login(8),
                threads=8,
                connections=8,
                duration=self.duration,
            )
            me = Wrk(
                target.base_url + target.me_path,
                target.me(2),
                threads=2,
                connections=8,
                duration=self.duration,
            )
            try:
                me_result, login_result = me.result(), logins.result()
            finally:
                me.kill()
                logins.kill()
        return me_result, login_result, meter.load
