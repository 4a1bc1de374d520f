-- index_log is pruned: entries older than the retention (GLIMPSE_INDEX_LOG_RETENTION_S) are
-- deleted, so the log no longer grows with every change ever made. One row records how far.
--
-- A reader whose index has applied every entry up to `upto` loses nothing. One that has not
-- (a snapshot written before `upto`, a replica stalled for longer than the retention) cannot
-- replay what is gone and builds its index from the tables instead.
--
-- Entries commit out of sequence order, so a bound is chosen in one run and used in a later
-- one: `candidate` is the newest entry old enough to go when it was chosen, and
-- `candidate_fence` a transaction id above every one assigned then. Every transaction that can
-- still commit an entry at or below the candidate took its sequence number, and so its id,
-- before the fence; once the oldest transaction still running is above the fence, each of
-- those entries has committed or never will, and deleting up to the candidate leaves no entry
-- to appear below `upto` later.
create table index_log_pruned (
  only_row boolean primary key default true check (only_row),
  -- Every entry with seq <= upto may be gone.
  upto bigint not null default 0,
  candidate bigint,
  candidate_fence bigint
);

insert into index_log_pruned default values;
