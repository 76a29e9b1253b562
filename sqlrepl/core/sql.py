"""Pure functions that build SQL text. Every identifier goes through `quote`."""

from __future__ import annotations

from collections.abc import Sequence

PREFIX = "_sqlrepl_"
LOG = "_sqlrepl_log"
META = "_sqlrepl_meta"
TABLES = "_sqlrepl_tables"
GUARD_PREFIX = "_sqlrepl_g"
CAPTURE_PREFIX = "_sqlrepl_c"
FOLLOWERS = "_sqlrepl_followers"
#: The trigger that bounds the log in the capture path (no trims by the daemon).
RETAIN_TRIGGER = "_sqlrepl_retain"
#: The log is cut back every this many entries.
RETAIN_EVERY = 1024
#: Key columns the log starts with; WITHOUT ROWID tables with wider keys add more
#: (ALTER TABLE ADD COLUMN). One column: every byte of the log record is paid per row
#: an app writes (four columns cost 4 % of bulk-insert throughput, scripts/bench.py).
LOG_KEY_COLUMNS = 1


def quote(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """Quote an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (with ESCAPE '\\') matching names that start with `prefix`."""
    return prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"


def key_column(i: int) -> str:
    """The log's column holding the i-th key value of a row (k0, k1, …)."""
    return f"k{i}"


def key_columns(width: int) -> list[str]:
    """The log's first `width` key columns: the one list every reader of the log uses."""
    return [key_column(i) for i in range(width)]


def create_internal_tables(width: int = LOG_KEY_COLUMNS) -> str:
    # The log's columns carry no type and no NOT NULL on purpose: every app write runs an
    # insert into it, and `tid INTEGER NOT NULL` alone cost 25 % of bulk-insert throughput
    # (scripts/bench.py, SQLite 3.40). Only the capture triggers write it.
    keys = ", ".join(key_columns(width))
    return f"""
CREATE TABLE IF NOT EXISTS {LOG}(seq INTEGER PRIMARY KEY, tid, {keys});
CREATE TABLE IF NOT EXISTS {META}(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {TABLES}(tid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                                    sql TEXT NOT NULL, capture TEXT NOT NULL);
{create_extras()}
"""


def create_extras() -> str:
    """sqlrepl's objects that hold nothing replication needs: the followers' list and
    the position view (created only where missing)."""
    return f"""
CREATE TABLE IF NOT EXISTS {FOLLOWERS}(node TEXT PRIMARY KEY, url TEXT, seq INTEGER NOT NULL,
                                       seen REAL NOT NULL) WITHOUT ROWID;
{create_position_view()};
"""


#: The view any driver reads a commit's position token from (`core/tokens.py`).
POSITION_VIEW = "_sqlrepl_position"


def create_position_view() -> str:
    """`SELECT token FROM _sqlrepl_position`: the file's position as `epoch:seq`, in
    any role (a leader's log head, a follower's applied batch, a snapshot's stamp), and
    the schema version capture was last in step with (see docs/consistency.md)."""
    meta = f"(SELECT value FROM {META} WHERE key = '%s')"
    role = meta % "role"
    epoch = (
        f"CAST(CASE {role} WHEN 'snapshot' THEN {meta % 'snapshot_epoch'} "
        f"ELSE {meta % 'epoch'} END AS INTEGER)"
    )
    seq = (
        f"CAST(CASE {role} WHEN 'follower' THEN {meta % 'seq'} "
        f"WHEN 'snapshot' THEN {meta % 'snapshot_seq'} "
        f"ELSE (SELECT coalesce(max(seq), 0) FROM {LOG}) END AS INTEGER)"
    )
    return (
        f"CREATE VIEW IF NOT EXISTS {POSITION_VIEW}(epoch, seq, token, schema_version) AS "
        f"SELECT e, s, e || ':' || s, v FROM (SELECT {epoch} AS e, {seq} AS s, "
        f"{meta % 'schema_version'} AS v)"
    )


def _log_insert(tid: int, exprs: Sequence[str], where: str = "", source: str = "") -> str:
    cols = ", ".join(["tid", *key_columns(len(exprs))])
    values = ", ".join([str(tid), *exprs])
    if not source and not where:
        return f"INSERT INTO {LOG}({cols}) VALUES({values});"
    return f"INSERT INTO {LOG}({cols}) SELECT {values}{source}{where};"


def capture_trigger_name(op: str, tid: int) -> str:
    return f"{CAPTURE_PREFIX}{op}_{tid}"


def capture_triggers(
    table: str,
    tid: int,
    keys: Sequence[str],
    unique_indexes: Sequence[Sequence[tuple[str, str]]] = (),
) -> list[str]:
    """CREATE TRIGGER statements that log the key of every row a statement touches.

    `keys` are the key expressions (the rowid alias, or the PRIMARY KEY columns of a
    WITHOUT ROWID table). `unique_indexes` lists, per secondary UNIQUE index, its
    (column, collation) pairs: rows that `OR REPLACE` removes through them fire no
    delete trigger, so BEFORE triggers log their keys.
    """
    t = quote(table)
    new = [f"NEW.{quote(k)}" for k in keys]
    old = [f"OLD.{quote(k)}" for k in keys]
    key_changed = " OR ".join(f"{o} IS NOT {n}" for o, n in zip(old, new, strict=True))
    stmts = [
        f"CREATE TRIGGER {quote(capture_trigger_name('i', tid))} AFTER INSERT ON {t} "
        f"BEGIN {_log_insert(tid, new)} END",
        f"CREATE TRIGGER {quote(capture_trigger_name('u', tid))} AFTER UPDATE ON {t} "
        f"BEGIN {_log_insert(tid, new)} {_log_insert(tid, old, where=' WHERE ' + key_changed)} END",
        f"CREATE TRIGGER {quote(capture_trigger_name('d', tid))} AFTER DELETE ON {t} "
        f"BEGIN {_log_insert(tid, old)} END",
    ]
    if unique_indexes:
        plain = [quote(k) for k in keys]
        for op, event in (("r", "INSERT"), ("s", "UPDATE")):
            body = " ".join(
                _log_insert(tid, plain, source=f" FROM {t}", where=" WHERE " + _conflict(cols))
                for cols in unique_indexes
            )
            stmts.append(
                f"CREATE TRIGGER {quote(capture_trigger_name(op, tid))} BEFORE {event} ON {t} "
                f"BEGIN {body} END"
            )
    return stmts


def _conflict(columns: Sequence[tuple[str, str]]) -> str:
    return " AND ".join(f"{quote(c)} = NEW.{quote(c)} COLLATE {quote(coll)}" for c, coll in columns)


def guard_triggers(table: str, message: str) -> list[str]:
    """Statements that (re)create triggers refusing every app write to `table` with `message`.

    The applier's connection runs with triggers disabled, so only apps see them.
    """
    t = quote(table)
    raise_ = f"SELECT RAISE(ABORT, {literal(message)});"
    stmts = []
    for op, event in (("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")):
        name = quote(f"{GUARD_PREFIX}{op}_{table}")
        stmts.append(f"DROP TRIGGER IF EXISTS {name}")
        stmts.append(f"CREATE TRIGGER {name} BEFORE {event} ON {t} BEGIN {raise_} END")
    return stmts


def insert_row(table: str, names: Sequence[str], replace: bool) -> str:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    cols = ", ".join(quote(n) for n in names)
    marks = ", ".join("?" for _ in names)
    return f"{verb} INTO {quote(table)}({cols}) VALUES({marks})"


def delete_key(table: str, keys: Sequence[str]) -> str:
    where = " AND ".join(f"{quote(k)} = ?" for k in keys)
    return f"DELETE FROM {quote(table)} WHERE {where}"


def retention_trigger(limit: int) -> str:
    """Keep the newest `limit` log entries (and up to min(RETAIN_EVERY, limit) more):
    every such entry an app's write adds drops, in the app's own transaction, the
    entries `limit` behind it in one range delete. The daemon itself never trims, so it
    writes nothing to the file in steady state; deleting in batches costs apps far less
    than one delete per entry."""
    return (
        f"CREATE TRIGGER {RETAIN_TRIGGER} AFTER INSERT ON {LOG} "
        f"WHEN NEW.seq % {min(RETAIN_EVERY, int(limit))} = 0 "
        f"BEGIN DELETE FROM {LOG} WHERE seq <= NEW.seq - {int(limit)}; END"
    )
