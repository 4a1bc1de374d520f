-- Semantic search: one embedding per indexed image, and the append-only log that every
-- in-process vector index (one per replica) replays to stay in step with this table.

create table embeddings (
  image_id bigint primary key references images (id) on delete cascade,
  -- Registry id (or directory id) of the model that produced the vector; vectors of
  -- different models are never mixed in one index.
  model_id text not null,
  dimension integer not null check (dimension > 0),
  -- float32 little-endian, L2-normalised, `dimension` values.
  vector bytea not null check (length(vector) = 4 * dimension),
  created_at timestamptz not null default now()
);

create index embeddings_model on embeddings (model_id);

-- op 1: the image's vector was inserted or replaced; op 2: it was removed.
create table index_log (
  seq bigserial primary key,
  image_id bigint not null,
  op smallint not null check (op in (1, 2)),
  model_id text not null,
  created_at timestamptz not null default now()
);

-- Written by trigger, so no code path can change an embedding without logging it, and in
-- the same transaction as the change. The advisory lock makes log entries commit in `seq`
-- order: a replica that has applied seq N never later sees a smaller seq appear.
create function embeddings_log() returns trigger language plpgsql as $$
declare
  last bigint;
begin
  perform pg_advisory_xact_lock(7305804365632845665);
  if tg_op = 'DELETE' then
    insert into index_log (image_id, op, model_id) values (old.image_id, 2, old.model_id)
      returning seq into last;
  else
    insert into index_log (image_id, op, model_id) values (new.image_id, 1, new.model_id)
      returning seq into last;
  end if;
  perform pg_notify('glimpse_index_log', last::text);
  return null;
end
$$;

create trigger embeddings_log after insert or update or delete on embeddings
  for each row execute function embeddings_log();

-- The indexer's queue: pending images, oldest first.
create index images_pending on images (id) where index_status = 1;

-- Hybrid search: the words of an image (file name, tags, generation prompt, caption) for
-- full-text matching. array_to_string over text[] is immutable in practice, which the
-- expression index needs.
create function image_search_text(file_name text, tags text[], meta jsonb) returns tsvector
language sql immutable parallel safe as $$
  select to_tsvector('english',
    coalesce(file_name, '') || ' ' || array_to_string(tags, ' ') || ' ' ||
    coalesce(meta ->> 'prompt', '') || ' ' || coalesce(meta ->> 'caption', ''))
$$;

create index images_search_text on images using gin (image_search_text(file_name, tags, meta));
