"""Taking over a database whose ledger tables another program created (docs/migrating.md).

``db migrate`` first inspects what exists (``inspect``) and makes a plan of steps:

* ``adapt``: a change tradebridge makes safely, keeping every row (a table of its name but
  of another shape moved aside under a new name, a check that refuses its values dropped, a
  NOT NULL it cannot honour dropped, a column widened, legacy statuses mapped);
* ``keep``: something of the other program's that works as it is (a primary key, a trigger);
* ``note``: something the operator should know before the workers start;
* ``conflict``: something only the operator can fix, with the fix. A plan with a conflict
  changes nothing.

The ``before`` steps run ahead of the migrations, the ``after`` steps (legacy statuses,
legacy history, row-level security on new tables) behind them, all in the migrations'
transaction. ``verify`` then checks what the workers need, whoever created it; a ledger they
cannot use fails the whole run.

The previous deployment's statuses map as follows (``LEGACY_STATUSES``): ``pending``,
``failed`` and ``cancelled`` mean what they mean here and stay; ``processing`` (claimed, maybe
sent) and ``placed`` (sent; the outcome was never tracked) become ``needs_review`` with a
``legacy_adopted`` event that says why: they are never placed again, and a person decides
(``tradebridge review``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal

import asyncpg

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.lifecycle import ALLOWED_MOVES, SignalStatus
from tradebridge.errors import MigrationFailed

StepKind = Literal["adapt", "keep", "note", "conflict"]
Phase = Literal["before", "after"]

_S = SignalStatus
# Families of column types, by pg_type.typname, and what each kind of column accepts.
_TEXT = frozenset({"text", "varchar"})
_NUMBER = frozenset({"numeric", "int2", "int4", "int8", "float4", "float8"})
_INTEGER = frozenset({"int2", "int4", "int8", "numeric"})
_TIME = frozenset({"timestamptz", "timestamp"})
_JSON = frozenset({"jsonb"})
_BOOL = frozenset({"bool"})
_TEXT_ARRAY = frozenset({"_text", "_varchar"})
_ID = frozenset({"int2", "int4", "int8"})

# What tradebridge reads and writes in trading_signals: column -> (family, kind). Kinds:
# 'price' (widened to unconstrained numeric: a fixed scale would round a price silently),
# 'quantity' (integers stay: whole contracts are what tradebridge needs), '' otherwise.
_SIGNAL_COLUMNS: dict[str, tuple[frozenset[str], str]] = {
    **dict.fromkeys((
        "signal_id", "strategy_name", "instrument", "side", "order_type", "account_name",
        "account_id", "status", "tradovate_order_id", "error_message", "time_in_force",
        "source", "group_id", "client_order_id", "claimed_by", "intent"), (_TEXT, "")),
    **dict.fromkeys(("quantity", "filled_qty", "target_position"), (_NUMBER, "quantity")),
    **dict.fromkeys((
        "price", "stop_loss", "take_profit", "stop_price", "avg_fill_price", "reference_price"),
        (_NUMBER, "price")),
    **dict.fromkeys((
        "placement_attempts", "stop_loss_ticks", "take_profit_ticks", "trailing_stop_ticks",
        "seq"), (_INTEGER, "")),
    **dict.fromkeys((
        "last_attempt_at", "created_at", "updated_at", "claimed_at", "ts_claimed",
        "ts_submitted", "ts_accepted", "ts_final"), (_TIME, "")),
    "metadata": (_JSON, ""),
    "take_profits": (_JSON, ""),
    "breakeven": (_BOOL, ""),
}  # fmt: skip
# Columns tradebridge always fills (or whose default does): NOT NULL may stay on them.
_ALWAYS_SET = frozenset(
    {
        "signal_id",
        "account_name",
        "status",
        "metadata",
        "placement_attempts",
        "created_at",
        "updated_at",
        "seq",
        "intent",
        "source",
        "filled_qty",
    }
)

# The other ledger tables: the columns their CREATE TABLE makes (later migrations only add
# columns to these). A table of the name without them, or with another type, is another
# program's: it is moved aside and tradebridge creates its own.
_TABLE_COLUMNS: dict[str, dict[str, frozenset[str]]] = {
    "order_history": {
        "id": _ID, "signal_id": _TEXT, "event": _TEXT, "detail": _JSON, "created_at": _TIME},
    "broker_calls": {
        "id": _ID, "signal_id": _TEXT, "dialect": _TEXT, "method": _TEXT, "path": _TEXT,
        "status": _ID, "latency_ms": _NUMBER, "request": _JSON, "response": _JSON,
        "error": _TEXT, "created_at": _TIME},
    "webhook_alerts": {
        "id": _ID, "idempotency_key": _TEXT, "received_at": _TIME, "source_ip": _TEXT,
        "format": _TEXT, "payload": _JSON, "signal_ids": _TEXT_ARRAY, "group_id": _TEXT,
        "outcome": _TEXT},
}  # fmt: skip

# The values tradebridge writes into columns a check of another program may constrain.
_PROBES: dict[str, tuple[str | None, ...]] = {
    "status": tuple(s.value for s in SignalStatus),
    "side": (*(s.value for s in Side), None),
    "order_type": (*(t.value for t in OrderType), None),
    "time_in_force": (*(t.value for t in TimeInForce if t is not TimeInForce.GTD), None),
    "intent": ("order", "exit", "reverse", "cancel", "flatten", "target"),
    "source": ("db", "webhook", "cli"),
    **dict.fromkeys((
        "quantity", "price", "stop_loss", "take_profit", "strategy_name", "instrument",
        "account_id"), (None,)),
}  # fmt: skip

LEGACY_STATUSES: Mapping[str, tuple[SignalStatus, str]] = {
    "processing": (
        _S.NEEDS_REVIEW,
        (
            "the previous bridge had claimed this row and may have sent it to Tradovate; "
            "tradebridge never places it again. Check the account at Tradovate, then "
            "`tradebridge review adopt SIGNAL ORDER` (it is this order) or "
            "`review absent SIGNAL`"
        ),
    ),
    "placed": (
        _S.NEEDS_REVIEW,
        (
            "the previous bridge placed this order and did not follow it to an outcome; "
            "tradebridge never places it again. Check it at Tradovate, then "
            "`tradebridge review adopt SIGNAL ORDER` (tracking follows it from then on) or "
            "`review absent SIGNAL`"
        ),
    ),
}
"""Statuses of the previous deployment that tradebridge does not have: what each becomes,
and why (the ``error_message`` and the ``legacy_adopted`` event say it)."""

# Triggers that only stamp updated_at (the previous deployment's update_updated_at_column()).
_STAMPS_UPDATED_AT = re.compile(
    r"^begin\s+new\.updated_at\s*:?=\s*[^;]+;\s*return\s+new;\s*end;?$", re.IGNORECASE
)
_EVENT_COLUMNS = ("event_type", "event", "type")
_DATA_COLUMNS = ("event_data", "detail", "data", "payload")


class AdoptionConflict(MigrationFailed):
    """The database has what tradebridge cannot adapt safely; nothing was changed."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(describe(plan))
        self.plan = plan


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the plan: what it is about and, for a conflict, how to fix it."""

    kind: StepKind
    what: str
    fix: str | None = None
    phase: Phase = "before"
    sql: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Moved:
    """A table moved aside: its new name, and how its history rows join the signals."""

    table: str
    new_name: str
    history_copy: str | None = None  # the INSERT that copies its events, if it can


@dataclass
class Plan:
    """What adopting the database takes; empty on a database tradebridge made."""

    steps: list[Step] = field(default_factory=list)
    moved: list[_Moved] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # ledger tables the migrations create
    legacy_statuses: dict[str, int] = field(default_factory=dict)
    rls: bool = False  # trading_signals has row-level security on

    @property
    def conflicts(self) -> list[Step]:
        """Return the steps only the operator can resolve."""
        return [s for s in self.steps if s.kind == "conflict"]

    @property
    def adapts(self) -> bool:
        """Return whether anything is changed besides the migrations."""
        return any(s.kind == "adapt" for s in self.steps)

    def add(
        self, kind: StepKind, what: str, *sql: str, fix: str | None = None, phase: Phase = "before"
    ) -> None:
        """Append a step."""
        self.steps.append(Step(kind, what, fix, phase, tuple(sql)))


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    typname: str
    typtype: str
    shown: str  # format_type: varchar(100), numeric(12,2) ...
    typmod: int
    not_null: bool
    has_default: bool
    dependents: tuple[str, ...]  # views, rules and policies that a type change would break


def ident(name: str) -> str:
    """Return ``name`` quoted as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


async def inspect(conn: asyncpg.Connection, *, today: date | None = None) -> Plan:
    """Return what adopting the database at ``conn`` takes; changes nothing."""
    plan = Plan()
    day = today or datetime.now(UTC).date()
    for table, columns in _TABLE_COLUMNS.items():
        kind = await _relkind(conn, table)
        if kind is None:
            plan.created.append(table)
            continue
        if kind != "r":
            plan.add(
                "conflict",
                f"{table} exists but is not a table (relkind {kind!r})",
                fix=f"rename or drop {table}, then run `tradebridge db migrate` again",
            )
            continue
        found = await _columns(conn, table)
        wrong = [
            c for c, family in columns.items() if c not in found or found[c].typname not in family
        ]
        if wrong:
            await _move_aside(conn, plan, table, found, wrong, day)
    kind = await _relkind(conn, "trading_signals")
    if kind is None:
        return plan
    if kind != "r":
        plan.add(
            "conflict",
            f"trading_signals exists but is not a table (relkind {kind!r})",
            fix="rename it, then run `tradebridge db migrate` again",
        )
        return plan
    plan.rls = bool(
        await conn.fetchval(
            "select relrowsecurity from pg_class where oid = 'trading_signals'::regclass"
        )
    )
    signals = await _columns(conn, "trading_signals")
    _signal_columns(plan, signals)
    await _checks(conn, plan)
    await _signal_rows(conn, plan, signals)
    await _triggers_and_policies(conn, plan)
    if plan.rls:
        for table in plan.created:
            plan.add(
                "adapt",
                f"turn row-level security on for the new {table} (trading_signals "
                "has it; an API role must not reach a table the previous setup "
                "protected until supabase/tradebridge.sql grants what it should)",
                f"alter table {ident(table)} enable row level security",
                phase="after",
            )
    return plan


async def apply_before(conn: asyncpg.Connection, plan: Plan) -> None:
    """Run the plan's ``before`` steps on ``conn`` (inside the caller's transaction)."""
    await _run(conn, plan.steps, "before")


async def apply_after(conn: asyncpg.Connection, plan: Plan) -> list[str]:
    """Run the plan's ``after`` steps: history copied, statuses mapped, RLS turned on.

    Return the signal ids whose legacy status was mapped.
    """
    for moved in plan.moved:
        if moved.history_copy is not None:
            await _execute(conn, moved.history_copy, f"copy the events of {moved.new_name}")
    mapped: list[str] = []
    if plan.legacy_statuses:
        # The lifecycle trigger refuses any move out of a status it does not know; this one
        # is the adoption's, made once, and recorded as an event on every row it moves.
        await conn.execute(
            "alter table trading_signals disable trigger tradebridge_signals_before_update"
        )
        for legacy, (status, why) in LEGACY_STATUSES.items():
            if legacy in plan.legacy_statuses:
                mapped += await _map_status(conn, legacy, status, why)
        await conn.execute(
            "alter table trading_signals enable trigger tradebridge_signals_before_update"
        )
        await conn.execute(
            "alter table trading_signals validate constraint trading_signals_status_check"
        )
    await _run(conn, plan.steps, "after")
    return mapped


async def verify(conn: asyncpg.Connection) -> list[str]:
    """Return what keeps the workers from using the ledger (empty: they can use it)."""
    problems: list[str] = []
    for table, columns in {
        "trading_signals": {c: f for c, (f, _) in _SIGNAL_COLUMNS.items()},
        **_TABLE_COLUMNS,
    }.items():
        if await _relkind(conn, table) != "r":
            problems.append(f"table {table} is missing")
            continue
        found = await _columns(conn, table)
        for name, family in columns.items():
            column = found.get(name)
            if column is None:
                problems.append(f"column {table}.{name} is missing")
            elif column.typname not in family:
                problems.append(
                    f"column {table}.{name} is {column.shown}, which tradebridge "
                    f"cannot use (one of {', '.join(sorted(family))})"
                )
    if problems:
        return problems
    signals = await _columns(conn, "trading_signals")
    for column in signals.values():
        if column.not_null and column.name in _SIGNAL_COLUMNS and column.name not in _ALWAYS_SET:
            problems.append(
                f"trading_signals.{column.name} is NOT NULL, but tradebridge writes rows without it"
            )
        elif column.not_null and column.name not in _SIGNAL_COLUMNS and not column.has_default:
            problems.append(
                f"trading_signals.{column.name} is NOT NULL without a default: "
                "tradebridge's own inserts would fail"
            )
    if not await _statuses_held(conn):
        statuses = await conn.fetch(
            "select status, count(*) as n from trading_signals group by status order by status"
        )
        known = {s.value for s in SignalStatus}
        problems += [
            f"{row['n']} rows of trading_signals have status {row['status']!r}, which is not "
            "one of tradebridge's"
            for row in statuses
            if row["status"] not in known
        ]
    validated = await conn.fetchval(
        "select convalidated from pg_constraint where conrelid = 'trading_signals'::regclass "
        "and conname = 'trading_signals_status_check'"
    )
    if validated is None:
        problems.append("check trading_signals_status_check is missing")
    elif not validated:
        problems.append("check trading_signals_status_check is NOT VALID (rows break it)")
    for check in await _check_constraints(conn):
        refused = await _refused(conn, check)
        if refused:
            problems.append(
                f"check {check.name} ({check.definition}) refuses values "
                f"tradebridge writes: {refused}"
            )
    problems += await _verify_triggers(conn)
    problems += await _verify_moves(conn)
    problems += await _verify_indexes(conn)
    return problems


# --- inspection ------------------------------------------------------------------------------


async def _relkind(conn: asyncpg.Connection, table: str) -> str | None:
    value = await conn.fetchval(
        "select c.relkind::text from pg_class c where c.oid = to_regclass($1)", table
    )
    return None if value is None else str(value)


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, _Column]:
    rows = await conn.fetch(
        """
        select a.attname, t.typname, t.typtype, format_type(a.atttypid, a.atttypmod) as shown,
               a.atttypmod, a.attnotnull, a.atthasdef,
               coalesce((
                   select array_agg(distinct coalesce(
                       (select 'view ' || r.ev_class::regclass::text from pg_rewrite r
                         where r.oid = d.objid and d.classid = 'pg_rewrite'::regclass),
                       (select 'policy ' || quote_ident(p.polname) from pg_policy p
                         where p.oid = d.objid and d.classid = 'pg_policy'::regclass),
                       (select 'trigger ' || quote_ident(t.tgname) from pg_trigger t
                         where t.oid = d.objid and d.classid = 'pg_trigger'::regclass)))
                     from pg_depend d
                    where d.refobjid = a.attrelid and d.refobjsubid = a.attnum
                      and d.classid in ('pg_rewrite'::regclass, 'pg_policy'::regclass,
                                        'pg_trigger'::regclass)
               ), '{}') as dependents
          from pg_attribute a join pg_type t on t.oid = a.atttypid
         where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped
        """,
        table,
    )
    return {
        r["attname"]: _Column(
            name=r["attname"],
            typname=r["typname"],
            typtype=r["typtype"],
            shown=r["shown"],
            typmod=r["atttypmod"],
            not_null=r["attnotnull"],
            has_default=r["atthasdef"],
            dependents=tuple(d for d in r["dependents"] if d),
        )
        for r in rows
    }


# The indexes and the owned sequences of a table ($1): renamed along with it.
_INDEXES_OF = (
    "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid "
    "where i.indrelid = to_regclass($1)"
)
_SEQUENCES_OF = (
    "select c.relname from pg_depend d join pg_class c on c.oid = d.objid "
    "where d.refobjid = to_regclass($1) and c.relkind = 'S' and d.deptype in ('a', 'i')"
)


async def _move_aside(
    conn: asyncpg.Connection,
    plan: Plan,
    table: str,
    found: dict[str, _Column],
    wrong: list[str],
    day: date,
) -> None:
    base = f"{table}_legacy_{day:%Y%m%d}"
    new_name, n = base, 1
    while await _relkind(conn, new_name) is not None:
        n += 1
        new_name = f"{base}_{n}"
    rows = await conn.fetchval(f"select count(*) from {ident(table)}")  # noqa: S608 - a table name quoted, no input
    shape = ", ".join(f"{c.name} {c.shown}" for c in found.values())
    sql = [f"alter table {ident(table)} rename to {ident(new_name)}"]
    # Its indexes and sequences would take the names tradebridge's own table needs.
    owned = (("index", _INDEXES_OF), ("sequence", _SEQUENCES_OF))
    for kind, query in owned:
        for record in await conn.fetch(query, table):
            name = str(record["relname"])
            if name.startswith(table):
                renamed = new_name + name[len(table) :]
                sql.append(f"alter {kind} {ident(name)} rename to {ident(renamed)}")
    # tradebridge's triggers, attached by an earlier migrate run that took the table for its
    # own (append-only would break the old table's ON DELETE CASCADE).
    for trigger in await conn.fetch(
        "select tgname from pg_trigger where tgrelid = to_regclass($1) and not tgisinternal "
        "and tgname like 'tradebridge\\_%'",
        table,
    ):
        sql.append(f"drop trigger {ident(str(trigger['tgname']))} on {ident(new_name)}")  # noqa: PERF401
    copy = await _history_copy(conn, new_name, found) if table == "order_history" else None
    moved = _Moved(table, new_name, copy)
    plan.moved.append(moved)
    plan.created.append(table)
    kept = f"{rows} rows kept there"
    if copy is not None:
        kept += "; its events are also copied into the new order_history as legacy_<event_type>"
    plan.add(
        "adapt",
        f"move {table} ({shape}) aside as {new_name}: tradebridge needs "
        f"{', '.join(wrong)} as it makes them ({kept})",
        *sql,
    )


async def _history_copy(
    conn: asyncpg.Connection, new_name: str, found: dict[str, _Column]
) -> str | None:
    """Return the INSERT that copies a legacy history's events onto the signals, if it can."""
    event = next((c for c in _EVENT_COLUMNS if c in found), None)
    if event is None or "signal_id" not in found:
        return None
    data = next((c for c in _DATA_COLUMNS if c in found), None)
    signals = await _columns(conn, "trading_signals")
    link = found["signal_id"]
    if "id" in signals and signals["id"].typname == link.typname and link.typname not in _TEXT:
        join = "s.id = h.signal_id"  # the previous deployment: a foreign key to trading_signals.id
    elif link.typname in _TEXT:
        join = "s.signal_id = h.signal_id::text"
    else:
        return None
    detail = (
        f"jsonb_build_object('legacy_table', {_literal(new_name)}, 'legacy_id', "
        f"{'h.id::text' if 'id' in found else 'null'}, 'data', "
        f"{f'to_jsonb(h.{ident(data)})' if data else 'null'})"
    )
    created = "coalesce(h.created_at::timestamptz, now())" if "created_at" in found else "now()"
    order = "h.created_at, h.id" if {"created_at", "id"} <= set(found) else "1"
    return (
        "insert into order_history (signal_id, event, detail, created_at) "  # noqa: S608 - identifiers quoted
        f"select s.signal_id, 'legacy_' || h.{ident(event)}, {detail}, {created} "
        f"from {ident(new_name)} h join trading_signals s on {join} "
        f"where h.{ident(event)} is not null order by {order}"
    )


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _signal_columns(plan: Plan, columns: dict[str, _Column]) -> None:
    for name, (family, kind) in _SIGNAL_COLUMNS.items():
        column = columns.get(name)
        if column is None:
            continue
        target = _widened(column, family, kind)
        if target is None and column.typname not in family:
            fix = _type_fix(column, family)
            plan.add(
                "conflict",
                f"trading_signals.{name} is {column.shown}: tradebridge needs "
                f"one of {', '.join(sorted(family))}",
                fix=fix,
            )
            continue
        if target is not None:
            what = f"widen trading_signals.{name} from {column.shown} to {target}"
            # tradebridge's own triggers are made again by the migrations that run behind.
            own = [d for d in column.dependents if d.startswith("trigger tradebridge_")]
            foreign = [d for d in column.dependents if d not in own]
            if foreign:
                plan.add(
                    "conflict",
                    f"{what}: {', '.join(foreign)} depends on it",
                    fix=f"drop {' and '.join(foreign)}, run `tradebridge db migrate`, then "
                    "create it again",
                )
                continue
            drops = [f"drop trigger if exists {d.split(' ', 1)[1]} on trading_signals" for d in own]
            why = {
                "text": "tradebridge writes text of its own length: ids, error messages, "
                "webhook strategy names",
                "numeric": "a fixed scale or an integer would round a price silently",
                "jsonb": "tradebridge reads and writes jsonb",
            }[target]
            plan.add(
                "adapt",
                f"{what} ({why}; every value is kept)",
                *drops,
                f"alter table trading_signals alter column {ident(name)} type {target} "
                f"using {ident(name)}::{target}",
            )
        if column.not_null and name not in _ALWAYS_SET:
            plan.add(
                "adapt",
                f"drop NOT NULL on trading_signals.{name}: tradebridge writes "
                "rows without it (flatten, cancel and denied webhook rows)",
                f"alter table trading_signals alter column {ident(name)} drop not null",
            )
    for column in columns.values():
        if column.name in _SIGNAL_COLUMNS:
            continue
        if column.not_null and not column.has_default:
            plan.add(
                "conflict",
                f"trading_signals.{column.name} is NOT NULL without a default: "
                "tradebridge's own inserts (webhook, CLI) do not know it",
                fix=f"alter table trading_signals alter column {ident(column.name)} set "
                f"default ... (or drop not null)",
            )
        else:
            plan.add(
                "keep",
                f"trading_signals.{column.name} {column.shown}"
                + (
                    " (the primary key; tradebridge keys its own work by seq)"
                    if column.name == "id"
                    else ""
                ),
            )


def _widened(column: _Column, family: frozenset[str], kind: str) -> str | None:
    """Return the type a column is widened to, or None if it stays as it is."""
    if family is _TEXT:
        bounded = column.typname == "varchar" and column.typmod > 0
        # Every value of these has a text form that reads back the same (an id of digits,
        # an enum's label).
        kinds = {"bpchar", "int2", "int4", "int8", "numeric", "uuid"}
        if bounded or column.typname in kinds or column.typtype == "e":
            return "text"
    elif family is _NUMBER and kind in ("price", "quantity"):
        if column.typname == "numeric" and column.typmod != -1:
            return "numeric"
        if kind == "price" and column.typname in ("int2", "int4", "int8"):
            return "numeric"
    elif family is _JSON and column.typname == "json":
        return "jsonb"
    return None


_TARGETS = {_TEXT: "text", _NUMBER: "numeric", _INTEGER: "integer", _TIME: "timestamptz",
            _JSON: "jsonb", _BOOL: "boolean"}  # fmt: skip


def _type_fix(column: _Column, family: frozenset[str]) -> str:
    target = _TARGETS[family]
    name = ident(column.name)
    return (
        f"convert it (alter table trading_signals alter column {name} type {target} using "
        f"{name}::{target}) or rename it (tradebridge then adds its own), then run "
        "`tradebridge db migrate` again"
    )


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    definition: str
    expression: str
    columns: tuple[str, ...]
    validated: bool


async def _check_constraints(conn: asyncpg.Connection) -> list[_Check]:
    rows = await conn.fetch(
        """
        select c.conname, pg_get_constraintdef(c.oid) as definition,
               pg_get_expr(c.conbin, c.conrelid) as expression, c.convalidated,
               array(select a.attname from pg_attribute a
                      where a.attrelid = c.conrelid and a.attnum = any(c.conkey)) as columns
          from pg_constraint c
         where c.conrelid = 'trading_signals'::regclass and c.contype = 'c'
         order by c.conname
        """
    )
    return [
        _Check(
            r["conname"], r["definition"], r["expression"], tuple(r["columns"]), r["convalidated"]
        )
        for r in rows
    ]


async def _refused(conn: asyncpg.Connection, check: _Check) -> list[str]:
    """Return the values tradebridge writes that ``check`` refuses (one-column checks)."""
    if len(check.columns) != 1 or check.columns[0] not in _PROBES:
        return []
    name = check.columns[0]
    base = await conn.fetchval(
        "select format_type(a.atttypid, null) from pg_attribute a "
        "where a.attrelid = 'trading_signals'::regclass and a.attname = $1",
        name,
    )
    refused: list[str] = []
    for value in _PROBES[name]:
        ok = await conn.fetchval(
            f"select coalesce(({check.expression}), true) "  # noqa: S608 - the table's own expression
            f"from (select $1::text::{base} as {ident(name)}) as trading_signals",
            value,
        )
        if not ok:
            refused.append("null" if value is None else repr(value))
    return refused


async def _checks(conn: asyncpg.Connection, plan: Plan) -> None:
    for check in await _check_constraints(conn):
        if check.name == "trading_signals_signal_id_present":
            continue
        refused = await _refused(conn, check)
        if not refused:
            if check.name != "trading_signals_status_check":
                plan.add("keep", f"check {check.name}: {check.definition}")
            continue
        replaced = (
            "; tradebridge's own trading_signals_status_check replaces it"
            if check.columns == ("status",)
            else ""
        )
        plan.add(
            "adapt",
            f"drop check {check.name} ({check.definition}): it refuses "
            f"{', '.join(refused)}, which tradebridge writes{replaced}",
            f"alter table trading_signals drop constraint {ident(check.name)}",
        )


async def _statuses_held(conn: asyncpg.Connection) -> bool:
    """Return whether a validated check already holds every row to tradebridge's statuses.

    Then reading the rows (a scan of the whole table, on every run) would tell nothing.
    """
    check = next(
        (c for c in await _check_constraints(conn) if c.name == "trading_signals_status_check"),
        None,
    )
    if check is None or not check.validated or check.columns != ("status",):
        return False
    if await _refused(conn, check):
        return False
    foreign = await conn.fetchval(
        f"select coalesce(({check.expression}), true) "  # noqa: S608 - the table's own expression
        "from (select s as status from unnest(array['placed', null]::text[]) s) "
        f"as trading_signals where coalesce(({check.expression}), true)"
    )
    return foreign is None


async def _signal_rows(conn: asyncpg.Connection, plan: Plan, columns: dict[str, _Column]) -> None:
    if "status" in columns and not await _statuses_held(conn):
        rows = await conn.fetch(
            "select status, count(*) as n, min(created_at) as oldest from trading_signals "
            "group by status order by status"
            if "created_at" in columns
            else "select status, count(*) as n, null as oldest from trading_signals "
            "group by status order by status"
        )
        known = {s.value for s in SignalStatus}
        for row in rows:
            status, n = row["status"], row["n"]
            if status in LEGACY_STATUSES:
                new, why = LEGACY_STATUSES[status]
                plan.legacy_statuses[status] = n
                plan.add(
                    "adapt",
                    f"status {status!r} becomes {new.value!r} on {_rows(n)} "
                    f"(event legacy_adopted): {why.split(';')[0]}; never placed again",
                    phase="after",
                )
            elif status == SignalStatus.PENDING.value:
                since = row["oldest"]
                oldest = f", the oldest from {since:%Y-%m-%d %H:%M}Z" if since else ""
                plan.add(
                    "note",
                    f"{_rows(n)} pending{oldest}: the workers place them as soon "  # noqa: S608 - advice
                    "as they start. Cancel any you no longer want first: update "
                    "trading_signals set status = 'cancelled' where status = 'pending' "
                    "and created_at < ...",
                )
            elif status not in known:
                label = "null" if status is None else repr(status)
                where = "is null" if status is None else f"= {_literal(status)}"
                plan.add(
                    "conflict",
                    f"{_rows(n)} of trading_signals with status {label}, which "
                    "tradebridge does not know",
                    fix=f"update trading_signals set status = 'failed' where status "  # noqa: S608 - advice
                    f"{where} (or another of {', '.join(s.value for s in SignalStatus)}), "
                    "then run `tradebridge db migrate` again",
                )
    unique = await conn.fetchval(
        "select 1 from pg_index i join pg_attribute a "
        "on a.attrelid = i.indrelid and a.attnum = i.indkey[0] "
        "where i.indrelid = 'trading_signals'::regclass and i.indisunique "
        "and i.indnkeyatts = 1 and i.indpred is null and a.attname = 'signal_id'"
    )
    if "signal_id" in columns and unique is None:
        duplicates = await conn.fetchrow(
            "select count(*) as n, min(signal_id) as example from (select signal_id "
            "from trading_signals group by signal_id having count(*) > 1) d"
        )
        if duplicates is not None and duplicates["n"]:
            plan.add(
                "conflict",
                f"trading_signals has {duplicates['n']} duplicated signal_id "
                f"values (e.g. {duplicates['example']})",
                fix="tradebridge needs signal_id unique: resolve them, then run "
                "`tradebridge db migrate` again",
            )


async def _triggers_and_policies(conn: asyncpg.Connection, plan: Plan) -> None:
    for trigger in await conn.fetch(
        "select t.tgname, p.proname, p.prosrc from pg_trigger t "
        "join pg_proc p on p.oid = t.tgfoid where t.tgrelid = 'trading_signals'::regclass "
        "and not t.tgisinternal and t.tgname not like 'tradebridge\\_%' order by t.tgname"
    ):
        body = " ".join(str(trigger["prosrc"]).split())
        if _STAMPS_UPDATED_AT.match(body):
            plan.add(
                "keep",
                f"trigger {trigger['tgname']} ({trigger['proname']}()): it only "
                "stamps updated_at, as tradebridge's own trigger does",
            )
        else:
            plan.add(
                "note",
                f"trigger {trigger['tgname']} ({trigger['proname']}()) is kept, "
                "unread: make sure it changes neither status nor a column tradebridge "
                "writes (docs/ledger.md)",
            )
    for policy in await conn.fetch(
        "select tablename, policyname, cmd, roles, permissive from pg_policies "
        "where tablename = any($1::text[]) and policyname not like 'tradebridge\\_%' "
        "order by tablename, policyname",
        ["trading_signals", *(t for t in _TABLE_COLUMNS if t not in {m.table for m in plan.moved})],
    ):
        roles = ", ".join(policy["roles"])
        plan.add(
            "note",
            f"RLS policy {policy['policyname']!r} on {policy['tablename']} "
            f"({policy['permissive'].lower()} {policy['cmd']} to {roles}) is kept: while "
            "it exists, supabase/tradebridge.sql's narrower policies restrict nothing "
            "it allows; drop it once your strategies insert as docs/migrating.md says",
        )


async def _run(conn: asyncpg.Connection, steps: Iterable[Step], phase: Phase) -> None:
    for step in steps:
        if step.kind != "adapt" or step.phase != phase:
            continue
        for statement in step.sql:
            await _execute(conn, statement, step.what)


async def _execute(conn: asyncpg.Connection, statement: str, what: str) -> None:
    try:
        await conn.execute(statement)
    except asyncpg.PostgresError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MigrationFailed(f"could not {what}: {first}; nothing was changed") from e


async def _map_status(
    conn: asyncpg.Connection, legacy: str, status: SignalStatus, why: str
) -> list[str]:
    rows = await conn.fetch(
        """
        with old as (
            select signal_id, error_message as before from trading_signals where status = $1
        ), mapped as (
            update trading_signals s set status = $2, error_message = $3
              from old where s.signal_id = old.signal_id
            returning s.signal_id, s.tradovate_order_id, old.before
        ), events as (
            insert into order_history (signal_id, event, detail)
            select signal_id, 'legacy_adopted',
                   jsonb_build_object('legacy_status', $1::text, 'to', $2::text, 'reason', $4::text,
                                      'tradovate_order_id', tradovate_order_id,
                                      'previous_error_message', before)
              from mapped
        )
        select signal_id from mapped
        """,
        legacy,
        status.value,
        f"needs review (legacy {legacy}): {why}"[:500],
        why,
    )
    return [str(r["signal_id"]) for r in rows]


# --- verification ----------------------------------------------------------------------------

_TRIGGERS = {
    "trading_signals": ("tradebridge_signals_before_update", "tradebridge_signals_notify_insert",
                        "tradebridge_signals_notify_requeue",
                        "tradebridge_signals_outside_cancel"),
    "order_history": ("tradebridge_order_history_append_only",
                      "tradebridge_order_history_no_truncate"),
}  # fmt: skip


async def _verify_triggers(conn: asyncpg.Connection) -> list[str]:
    problems = []
    for table, names in _TRIGGERS.items():
        found = {
            r["tgname"]: r["tgenabled"]
            for r in await conn.fetch(
                "select tgname, tgenabled::text from pg_trigger where tgrelid = to_regclass($1)",
                table,
            )
        }
        for name in names:
            if name not in found:
                problems.append(f"trigger {name} on {table} is missing")
            elif found[name] == "D":
                problems.append(
                    f"trigger {name} on {table} is disabled (alter table {table} "
                    f"enable trigger {name})"
                )
    return problems


async def _verify_moves(conn: asyncpg.Connection) -> list[str]:
    """Compare the SQL lifecycle with ``ALLOWED_MOVES`` (domain/lifecycle.py)."""
    if await conn.fetchval("select to_regproc('tradebridge_status_move_allowed')") is None:
        return ["function tradebridge_status_move_allowed() is missing"]
    values = [s.value for s in SignalStatus]
    rows = await conn.fetch(
        "select o.s as old, n.s as new, tradebridge_status_move_allowed(o.s, n.s, false) as ok "
        "from unnest($1::text[]) o(s) cross join unnest($1::text[]) n(s)",
        values,
    )
    wrong = [
        f"{r['old']} -> {r['new']}"
        for r in rows
        if bool(r["ok"]) != (SignalStatus(r["new"]) in ALLOWED_MOVES[SignalStatus(r["old"])])
    ]
    if wrong:
        return [
            "tradebridge_status_move_allowed() disagrees with the lifecycle on "
            + ", ".join(wrong[:5])
        ]
    return []


async def _verify_indexes(conn: asyncpg.Connection) -> list[str]:
    unique = {
        str(r["column"])
        for r in await conn.fetch(
            "select a.attname as column from pg_index i join pg_attribute a "
            "on a.attrelid = i.indrelid and a.attnum = i.indkey[0] "
            "where i.indrelid = 'trading_signals'::regclass and i.indisunique "
            "and i.indnkeyatts = 1 and i.indpred is null"
        )
    }
    return [
        f"trading_signals.{c} has no unique index" for c in ("signal_id", "seq") if c not in unique
    ]


def describe(plan: Plan) -> str:
    """Return the plan's conflicts as one message, each with its fix."""
    parts = [f"{s.what} (fix: {s.fix})" for s in plan.conflicts]
    return (
        f"{len(parts)} conflict{'s' if len(parts) != 1 else ''} with what tradebridge "
        f"needs; nothing was changed: " + "; ".join(parts)
    )
