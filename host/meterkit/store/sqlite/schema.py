"""The SQLite schema of the head-end database and its migrations.

Versioned: table ``schema_version``; ``MIGRATIONS`` are applied in order when a file is opened for writing.

meters     device (8-byte id, key), public_key (65-byte point), name, provisioned_at, reporting_period_s,
           last_seen (receive time of the newest frame, concentrator clock), last_counter (last command/ack
           counter signed for it), firmware, board, boot_count (latest hello)              -- v1
           ack_seq (cumulative ack watermark), first_seq (first sequence number stored), online,
           frames_stored                                                                    -- v2
frames     device, seq, kind, meter_time, status, received_at, raw (the COSE_Sign1 as received: evidence);
           PRIMARY KEY (device, seq) -- the dedupe authority
readings   device, seq, meter_time, status, import_wh (1.8.0), export_wh (2.8.0), registers (JSON, by OBIS
           code), power_mw, voltage_mv, current_ma, uncovered_ppm
intervals  device, end_time, import_mwh, export_mwh, status, period_s, seq (the frame that carried the row);
           PRIMARY KEY (device, end_time)
events     device, seq, event_seq, code, value, event_time
billing    device, seq, period_end, registers (JSON), max_demand (JSON)
commands   device, counter, op, args (JSON), sent_at, expires_at, answered_at, result, reason
rejects    device (claimed id, or x'' when none could be read), peer, reason, count, first_at, last_at,
           last_detail
           device is a registered meter's id or x'': rejects naming an unknown kid are per (peer, reason),
           the kid in last_detail; at most counters.MAX_SOURCES peers, then '(other sources)'  -- v5
outages    id, device, start (last frame before the silence), detected_at, end (first frame after), cause
           ('power', 'communication', 'power+communication', 'unknown'), power_up_at (meter's own time of
           its restart), evidence (JSON)                                                    -- v2
gaps       id, device, kind ('frames': sequence numbers, 'intervals': load-profile end times), first, last,
           detected_at, state ('open', 'requested', 'filled', 'resolved', 'skipped', 'lost', 'not-sent'),
           requested_at, command_counter, attempts, missing, closed_at                       -- v2
counters   name, value: the concentrator's counters, persisted across restarts              -- v2
meter_keys device, kid (the head-end key the meter holds: its commands and acks are signed with it), since
           (when it was recorded: the key rotation's answer stored, or the rotation queued)       -- v8
command_queue  id, device, op, args (JSON, top-level keys as text), created_at, expires_at (UTC s: never sent
           at or after it), state ('queued', 'sent', 'answered', 'expired', 'failed'), counter (of the latest
           attempt), attempts, sent_at (latest attempt), answered_at, result, reason, note (who or what
           queued it)                                                                        -- v3
commands   + queue_id: the command_queue entry an attempt carried (NULL: the concentrator's own back-fill)
                                                                                             -- v3
meters     + clock_drift_s (the meter's clock minus the concentrator's, s, as last measured from two frames
           received promptly; NULL: never measured), clock_drift_at (when, concentrator clock)   -- v4
command_queue + queued_by (who queued it: an operator, or 'concentrator')                   -- v6
audit      id, at (concentrator clock), device, queue_id (NULL: a back-fill), counter (of the attempt), op,
           args (JSON), actor (who the command is for: command_queue.queued_by, or 'concentrator'), action
           ('queued', 'sent', 'answered', 'refused', 'answered-again', 'expired', 'failed'), result, reason:
           append only (triggers refuse UPDATE and DELETE): a retry adds a row, never rewrites one   -- v6
readings   + control_state, control_mode, limit_w (K_CONTROL: IC70 state, control mode, import limit W;
           NULL: not sent, which means [1, 0, 0])                                            -- v6
dr_groups  device, group_id: the demand-response / limiter groups a meter belongs to (the registry's copy;
           the meter learns them by OP_CONFIG A_GROUPS)                                      -- v7
dr_events  id (the event id sent as A_DR_ID), group_id, start (UTC s), duration_s, limit_w (NULL: a shed),
           shed (0/1), created_at, note                                                      -- v7
dr_targets event_id, device, queue_id: the meters an event was queued for (the group's members when it was
           created) and the command_queue entry that carries it                              -- v7
alerts     id, rule, severity ('info', 'warning', 'critical'), device (x'': about a source address only),
           source (peer address, '': about a meter only), state ('open', 'acknowledged'), count (occurrences),
           first_at, last_at (concentrator clock), detail (the latest occurrence), acked_at, acked_by; at most
           one open alert per (rule, device, source): a partial unique index             -- v9

Integers that SQLite cannot hold (outside signed 64 bits; the protocol allows uint64) are stored as NULL in
the decoded columns; the raw frame keeps the exact value.
"""

from __future__ import annotations

import sqlite3
import time

from meterkit.store.api import StoreError

_V1 = (
    """CREATE TABLE meters (
        device BLOB PRIMARY KEY,
        public_key BLOB NOT NULL,
        name TEXT,
        provisioned_at REAL NOT NULL,
        reporting_period_s INTEGER NOT NULL DEFAULT 60,
        last_seen REAL,
        last_counter INTEGER NOT NULL DEFAULT 0,
        firmware TEXT,
        board TEXT,
        boot_count INTEGER
    )""",
    """CREATE TABLE frames (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        meter_time INTEGER NOT NULL,
        status INTEGER,
        received_at REAL NOT NULL,
        raw BLOB NOT NULL,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE readings (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        meter_time INTEGER NOT NULL,
        status INTEGER,
        import_wh INTEGER,
        export_wh INTEGER,
        registers TEXT NOT NULL,
        power_mw INTEGER,
        voltage_mv INTEGER,
        current_ma INTEGER,
        uncovered_ppm INTEGER,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE intervals (
        device BLOB NOT NULL,
        end_time INTEGER NOT NULL,
        import_mwh INTEGER,
        export_mwh INTEGER,
        status INTEGER,
        period_s INTEGER,
        seq INTEGER NOT NULL,
        PRIMARY KEY (device, end_time)
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        event_seq INTEGER,
        code INTEGER,
        value,
        event_time INTEGER,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE commands (
        device BLOB NOT NULL,
        counter INTEGER NOT NULL,
        op INTEGER NOT NULL,
        args TEXT,
        sent_at REAL NOT NULL,
        expires_at INTEGER NOT NULL,
        answered_at REAL,
        result INTEGER,
        reason TEXT,
        PRIMARY KEY (device, counter)
    )""",
    """CREATE TABLE rejects (
        device BLOB NOT NULL DEFAULT x'',
        peer TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        last_detail TEXT,
        PRIMARY KEY (device, peer, reason)
    )""",
)

_V2 = (
    "ALTER TABLE meters ADD COLUMN ack_seq INTEGER",
    "ALTER TABLE meters ADD COLUMN first_seq INTEGER",
    "ALTER TABLE meters ADD COLUMN online INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE meters ADD COLUMN frames_stored INTEGER NOT NULL DEFAULT 0",
    # data written under v1 keeps counting: frames stored so far, and the contiguous run from the first one
    "UPDATE meters SET frames_stored = (SELECT count(*) FROM frames f WHERE f.device = meters.device)",
    "UPDATE meters SET first_seq = (SELECT min(seq) FROM frames f WHERE f.device = meters.device)",
    """UPDATE meters SET ack_seq = (
        SELECT min(f.seq) FROM frames f WHERE f.device = meters.device
        AND NOT EXISTS (SELECT 1 FROM frames g WHERE g.device = f.device AND g.seq = f.seq + 1))""",
    """CREATE TABLE billing (
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        registers TEXT NOT NULL,
        max_demand TEXT,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE outages (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        start REAL NOT NULL,
        detected_at REAL NOT NULL,
        end REAL,
        cause TEXT,
        power_up_at INTEGER,
        evidence TEXT
    )""",
    "CREATE INDEX outages_device ON outages (device, start)",
    """CREATE TABLE gaps (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        kind TEXT NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        detected_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'open',
        requested_at REAL,
        command_counter INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        missing INTEGER,
        closed_at REAL,
        UNIQUE (device, kind, first)
    )""",
    "CREATE INDEX gaps_state ON gaps (state, device)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)

_V3 = (
    """CREATE TABLE command_queue (
        id INTEGER PRIMARY KEY,
        device BLOB NOT NULL,
        op INTEGER NOT NULL,
        args TEXT,
        created_at REAL NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        counter INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        sent_at REAL,
        answered_at REAL,
        result INTEGER,
        reason TEXT,
        note TEXT
    )""",
    "CREATE INDEX command_queue_state ON command_queue (state, device, id)",
    "CREATE INDEX command_queue_device ON command_queue (device, id)",
    "ALTER TABLE commands ADD COLUMN queue_id INTEGER",
    "CREATE INDEX commands_queue ON commands (queue_id)",
)

_V4 = (
    "ALTER TABLE meters ADD COLUMN clock_drift_s REAL",
    "ALTER TABLE meters ADD COLUMN clock_drift_at REAL",
)

# Rejects naming a kid of no registered meter were one row per claimed kid (issue 11: attacker input grew the
# table). The concentrator now keeps them per source and reason (device x''); these fold the old rows so.
_V5 = (
    """INSERT INTO rejects (device, peer, reason, count, first_at, last_at, last_detail)
        SELECT x'', peer, reason, sum(count), min(first_at), max(last_at),
               'folded by migration v5: ' || count(*) || ' claimed kid(s) of no registered meter'
        FROM rejects WHERE device != x'' AND device NOT IN (SELECT device FROM meters) GROUP BY peer, reason
        ON CONFLICT (device, peer, reason) DO UPDATE SET count = count + excluded.count,
            first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at),
            last_detail = excluded.last_detail""",
    "DELETE FROM rejects WHERE device != x'' AND device NOT IN (SELECT device FROM meters)",
)

_V6 = (
    "ALTER TABLE command_queue ADD COLUMN queued_by TEXT",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        device BLOB NOT NULL,
        queue_id INTEGER,
        counter INTEGER,
        op INTEGER NOT NULL,
        args TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        result INTEGER,
        reason TEXT
    )""",
    "CREATE INDEX audit_device ON audit (device, id)",
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append "
    "only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append "
    "only'); END",
    # what the queue and the commands table already know, as the audit log would have recorded it
    """INSERT INTO audit (at, device, queue_id, counter, op, args, actor, action, result, reason)
        SELECT at, device, queue_id, counter, op, args, actor, action, result, reason FROM (
            SELECT created_at AS at, device, id AS queue_id, NULL AS counter, op, args,
                   'unknown (before the audit log)' AS actor, 'queued' AS action, NULL AS result, note AS reason,
                   0 AS k FROM command_queue
            UNION ALL
            SELECT c.sent_at, c.device, c.queue_id, c.counter, c.op, c.args,
                   CASE WHEN c.queue_id IS NULL THEN 'concentrator' ELSE 'unknown (before the audit log)' END,
                   'sent', NULL, NULL, 1 FROM commands c
            UNION ALL
            SELECT c.answered_at, c.device, c.queue_id, c.counter, c.op, NULL,
                   CASE WHEN c.queue_id IS NULL THEN 'concentrator' ELSE 'unknown (before the audit log)' END,
                   CASE WHEN c.result < 0 AND c.result != -1 THEN 'refused' ELSE 'answered' END, c.result,
                   c.reason, 2 FROM commands c WHERE c.answered_at IS NOT NULL
            UNION ALL
            SELECT coalesce(sent_at, created_at), device, id, counter, op, NULL,
                   'unknown (before the audit log)', state, NULL, reason, 3
            FROM command_queue WHERE state IN ('expired', 'failed'))
        ORDER BY at, k""",
    "ALTER TABLE readings ADD COLUMN control_state INTEGER",
    "ALTER TABLE readings ADD COLUMN control_mode INTEGER",
    "ALTER TABLE readings ADD COLUMN limit_w INTEGER",
)

# Demand response (issue 12): groups in the registry, the events the utility called, whom each was queued for.
_V7 = (
    """CREATE TABLE dr_groups (
        device BLOB NOT NULL,
        group_id INTEGER NOT NULL,
        PRIMARY KEY (device, group_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX dr_groups_group ON dr_groups (group_id, device)",
    """CREATE TABLE dr_events (
        id INTEGER PRIMARY KEY,
        group_id INTEGER NOT NULL,
        start INTEGER NOT NULL,
        duration_s INTEGER NOT NULL,
        limit_w INTEGER,
        shed INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        note TEXT
    )""",
    """CREATE TABLE dr_targets (
        event_id INTEGER NOT NULL,
        device BLOB NOT NULL,
        queue_id INTEGER,
        PRIMARY KEY (event_id, device)
    ) WITHOUT ROWID""",
    "CREATE INDEX dr_targets_device ON dr_targets (device, event_id)",
)

# Which head-end key each meter holds (issue 12, key rotation).
_V8 = (
    """CREATE TABLE meter_keys (
        device BLOB PRIMARY KEY,
        kid BLOB NOT NULL,
        since REAL NOT NULL
    ) WITHOUT ROWID""",
)

# Security alerts (issue 15, intrusion detection at the head-end: meterkit.headend.monitor).
_V9 = (
    """CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        device BLOB NOT NULL DEFAULT x'',
        source TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'open',
        count INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        detail TEXT,
        acked_at REAL,
        acked_by TEXT
    )""",
    "CREATE UNIQUE INDEX alerts_open ON alerts (rule, device, source) WHERE state = 'open'",
    "CREATE INDEX alerts_device ON alerts (device, id)",
    "CREATE INDEX alerts_state ON alerts (state, id)",
)

# (version, what it brings, statements). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "registry, frames as evidence, decoded readings/intervals/events, commands, rejects", _V1),
    (2, "delivery state: ack watermark, outages, gaps, billing snapshots, persisted counters", _V2),
    (3, "operator command queue; each signed command attempt linked to its queue entry", _V3),
    (4, "clock drift per meter, as the concentrator last measured it", _V4),
    (5, "rejects of unknown kids folded per source and reason", _V5),
    (6, "command audit log (append only), who queued each command; K_CONTROL of readings", _V6),
    (7, "demand response: groups, events, the meters each event was queued for", _V7),
    (8, "the head-end key each meter holds (key rotation)", _V8),
    (9, "security alerts, one open per rule, meter and source", _V9),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in a database (0: no meterkit schema yet)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if not has:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations after the database's version, up to `upto`, each in its own transaction.
    Returns the versions applied. Raises StoreError for a database newer than this meterkit."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(f"database schema v{current} is newer than this meterkit understands "
                         f"(v{SCHEMA_VERSION}): upgrade meterkit")
    applied = []
    for version, what, statements in MIGRATIONS:
        if version <= current or version > upto:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                             "applied_at REAL NOT NULL, description TEXT)")
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                         (version, time.time(), what))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
