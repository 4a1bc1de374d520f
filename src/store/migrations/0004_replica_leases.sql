-- Replicas: one row per running glimpse process, so a reservation left by a process that died
-- is recognised at once rather than by its age. A replica is alive while both hold:
--   * its dedicated connection holds the session advisory lock (1734700655, id) — PostgreSQL
--     frees it the moment that connection ends, e.g. when the process is killed;
--   * expires_at, renewed every few seconds over that connection, is in the future — this
--     covers a replica cut off from the database whose connection the server has not yet
--     noticed is gone (a lock on a half-open connection can stay held for hours).
create table replicas (
  id integer generated always as identity primary key,
  -- host and process id, for operators reading the table
  label text not null default '',
  started_at timestamptz not null default now(),
  -- database time, so replicas agree on which leases ran out
  expires_at timestamptz not null
);

-- The replica whose process runs a generation (null: reserved before replicas were recorded;
-- only the age sweep returns those). No foreign key: a replica row that is gone counts as dead.
alter table generations add column replica_id integer;
